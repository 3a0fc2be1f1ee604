import VaultAudit
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
import VaultServer
import VaultStore

/// Every request record says what the route that answered it does with patient data (`access`), and the
/// breach report counts the record by it: the report reads no path.
@Suite struct AuditAccessTests {
    static func bearer(_ token: String) -> HTTPFields { ServerInProcessTests.bearer(token) }

    @Test func eachRequestRecordsWhatItsRouteDoesAndTheReportCountsIt() async throws {
        let s = try ServerInProcessTests.Served()
        let f = try #require(Corpus.shared.valid.first { $0.patient_id == "MRN0012345" })
        let instance = "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)/instances/\(f.sop_uid!)"
        let search = "/dicom-web/studies/\(f.study_uid!)/instances"
        let metadata = instance + "/metadata"
        let missing = "/dicom-web/studies/1.2.3", unknown = "/dicom-web/nothing-here"
        try await s.app.test(.live) { client in
            let gets: [(String, HTTPResponse.Status)] = [(search, .ok), (metadata, .ok), (instance, .ok), (missing, .notFound), (unknown, .notFound)]
            for (path, status) in gets {
                try await client.execute(uri: path, method: .get, headers: Self.bearer(s.rad)) { response in
                    #expect(response.status == status, "\(path)")
                }
            }
            try await client.execute(uri: instance, method: .delete, headers: Self.bearer(s.rad)) { #expect($0.status == .methodNotAllowed) }
            try await client.execute(uri: instance, method: .get) { #expect($0.status == .unauthorized) }
        }
        let records = s.vault.readAudit().records.map(\.event)
        func access(_ method: String, _ path: String, _ outcome: AuditOutcome) -> AuditAccess? {
            records.last { $0.action == .request(method: method, path: path) && $0.outcome == outcome }?.access
        }
        #expect(access("GET", search, .ok) == .search)
        #expect(access("GET", metadata, .ok) == .metadata)
        #expect(access("GET", instance, .ok) == .retrieve)
        // A failed or refused request says what its route would have done; the outcome says it did not.
        #expect(access("GET", missing, .failed) == .retrieve)
        #expect(access("GET", instance, .denied) == .retrieve)
        #expect(access("GET", unknown, .failed) == .noPatientData)
        #expect(access("DELETE", instance, .failed) == .noPatientData)
        #expect(records.filter(\.action.isRequest).allSatisfy { $0.access != nil })

        let report = try s.vault.auditReport(window: .all)
        let patient = try #require(report.patients.first { $0.patientID == "MRN0012345" })
        let rad = try #require(patient.accessors.first { $0.account == "rad" })
        #expect(rad.figures.searches == 1 && rad.figures.metadataRequests == 1 && rad.figures.retrievals == 1)
        #expect(rad.figures.instancesRetrieved == 1 && rad.figures.instancesMetadata == 1)
        #expect(rad.figures.bytes == Int64(readBytes(Corpus.shared.path(f)).count))
        // The 404 of a retrieval is a failed access; the unknown path and the 405 read no patient data.
        #expect(report.summary.failed == 1)
        #expect(report.accounts.first { $0.account == "rad" }?.failed == 3)
        #expect(report.summary.refused == 1)
    }

    /// Frames, bulk data, rendered images and thumbnails send a patient's pixels: each is a retrieval of
    /// that patient. (Before the `access` field the report went by the path, knew none of these routes,
    /// and counted them as requests that read no patient data.)
    @Test func framesBulkDataRenderedAndThumbnailsAreRetrievalsOfThePatient() async throws {
        let s = try PixelRouteTests.Served()
        let f = "native/mono16-5-frames.dcm"
        let base = try s.instancePath(f)
        let (study, series, _) = try #require(s.uids[f])
        let routes = [
            base + "/frames/1", base + "/frames/2,3", base + "/bulkdata/7FE00010", base + "/rendered", base + "/thumbnail",
            base + "/frames/2/rendered", "/dicom-web/studies/\(study)/series/\(series)/thumbnail", "/dicom-web/studies/\(study)/rendered",
        ]
        try await s.app.test(.live) { client in
            for route in routes {
                try await client.execute(uri: route, method: .get, headers: s.headers()) { response in
                    #expect(response.status == .ok, "\(route)")
                }
            }
        }
        var bytes: Int64 = 0
        for route in routes {
            let record = try #require(s.requests(route).last, "\(route)")
            #expect(record.access == .retrieve && record.patientIDs == ["PIXELS-1"], "\(route)")
            bytes += record.bytes
        }
        let report = try s.vault.auditReport(window: .all)
        let patient = try #require(report.patients.first { $0.patientID == "PIXELS-1" })
        let rad = try #require(patient.accessors.first { $0.account == "rad" })
        #expect(rad.figures.retrievals == routes.count && rad.figures.instancesRetrieved == routes.count)
        #expect(rad.figures.bytes == bytes && rad.figures.recordsWithoutByteCount == 0)
        #expect(report.summary.instancesRetrieved == routes.count)
    }
}
