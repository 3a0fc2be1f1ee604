import VaultAudit
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
@testable import VaultServer
import VaultStore

/// QIDO-RS matching (PS3.18 §8.3.4, PS3.4 C.2.2.2) over a real vault holding the generated corpus: lists,
/// wildcards on sealed values, time ranges, Warning headers, person name groups.
@Suite struct QIDOMatchingTests {
    typealias Served = ServerInProcessTests.Served

    static func objects(_ response: TestResponse) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]])
    }

    static func strings(_ o: [String: Any], _ tag: String) -> [String] { ((o[tag] as? [String: Any])?["Value"] as? [String]) ?? [] }

    /// Study UIDs of a /studies search.
    static func studies(_ client: some TestClientProtocol, _ s: Served, _ query: String) async throws -> Set<String> {
        let response = try await client.execute(uri: "/dicom-web/studies?" + query, method: .get, headers: ServerInProcessTests.bearer(s.rad))
        #expect(response.status == .ok, "\(query)")
        #expect(response.headers[.warning] == nil, "\(query): \(response.headers[.warning] ?? "")")
        return Set(try objects(response).flatMap { strings($0, "0020000D") })
    }

    @Test func wildcardsOnPatientIDAccessionNumberAndDescriptions() async throws {
        let s = try Served()
        let listed = try s.vault.listStudies()
        func expected(_ keep: (StudySummary) -> Bool) -> Set<String> { Set(listed.filter(keep).map(\.study.studyUID)) }
        func like(_ s: String, _ regex: String) -> Bool { s.range(of: regex, options: .regularExpression) != nil }
        let rules: [(String, (StudySummary) -> Bool)] = [
                ("PatientID=MRN00123*", { $0.patient.patientID.hasPrefix("MRN00123") }),
                ("PatientID=MRN000200?", { like($0.patient.patientID, "^MRN000200.$") }),
                ("AccessionNumber=ACC100?", { like($0.study.accessionNumber, "^ACC100.$") }),
                ("AccessionNumber=*100*", { $0.study.accessionNumber.contains("100") }),
                ("StudyDescription=*head*", { $0.study.description.lowercased().contains("head") }),
                ("StudyDescription=ct%20chest", { $0.study.description.lowercased() == "ct chest" }),
                ("ReferringPhysicianName=*house*", { $0.study.referringPhysician.lowercased().contains("house") }),
            ]
        let cases = rules.map { ($0.0, expected($0.1)) }
        let total = listed.count
        let series = try s.vault.listSeries()
        let axial = Set(series.filter { $0.series.description.lowercased().hasPrefix("axial") }.map(\.series.seriesUID))
        try await s.app.test(.router) { client in
            for (query, want) in cases {
                #expect(!want.isEmpty && want.count < total, "\(query): the corpus should make this a real test")
                let found1 = try await Self.studies(client, s, query)
                #expect(found1 == want, "\(query)")
            }
            // Identifiers stay case-sensitive.
            let found2 = try await Self.studies(client, s, "PatientID=mrn00123*")
            #expect(found2.isEmpty)
            // Series level: SeriesDescription wildcards.
            let want = axial
            #expect(!want.isEmpty)
            let response = try await client.execute(uri: "/dicom-web/series?SeriesDescription=AXIAL*", method: .get, headers: ServerInProcessTests.bearer(s.rad))
            #expect(Set(try Self.objects(response).flatMap { Self.strings($0, "0020000E") }) == want)
        }
    }

    @Test func multipleValuesBackslashSeparatedOrRepeated() async throws {
        let s = try Served()
        let listed = try s.vault.listStudies()
        func by(_ accessions: Set<String>) -> Set<String> { Set(listed.filter { accessions.contains($0.study.accessionNumber) }.map(\.study.studyUID)) }
        func byPatient(_ ids: Set<String>) -> Set<String> { Set(listed.filter { ids.contains($0.patient.patientID) }.map(\.study.studyUID)) }
        let two = by(["ACC1001", "ACC1003"])
        let patients = byPatient(["MRN0012345", "MRN0002001"])
        let uids = Array(listed.prefix(3).map(\.study.studyUID))
        let mrct = Set(listed.filter { !Set($0.modalities).isDisjoint(with: ["MR", "CT"]) }.map(\.study.studyUID))
        try await s.app.test(.router) { client in
            #expect(two.count == 2)
            let found3 = try await Self.studies(client, s, "AccessionNumber=ACC1001%5CACC1003")
            #expect(found3 == two)
            let found4 = try await Self.studies(client, s, "AccessionNumber=ACC1001&AccessionNumber=ACC1003")
            #expect(found4 == two)
            let found5 = try await Self.studies(client, s, "00080050=ACC1001&AccessionNumber=ACC1003")
            #expect(found5 == two)
            // Exact Patient IDs go through the blind index, one lookup each.
            let found6 = try await Self.studies(client, s, "PatientID=MRN0012345%5CMRN0002001")
            #expect(found6 == patients)
            let found7 = try await Self.studies(client, s, "PatientID=MRN0012345&PatientID=MRN0002001")
            #expect(found7 == patients)
            // Modalities and UIDs: backslash, comma or repeated.
            let found8 = try await Self.studies(client, s, "StudyInstanceUID=\(uids[0])%5C\(uids[1])&StudyInstanceUID=\(uids[2])")
            #expect(found8 == Set(uids))
            let found9 = try await Self.studies(client, s, "ModalitiesInStudy=MR%5CCT")
            #expect(found9 == mrct)
            let found10 = try await Self.studies(client, s, "ModalitiesInStudy=MR&ModalitiesInStudy=CT")
            #expect(found10 == mrct)
        }
    }

    @Test func studyTimeRangesAndIncludefieldAll() async throws {
        let s = try Served()
        let listed = try s.vault.listStudies()
        let times = listed.map(\.study.time).filter { !$0.isEmpty }.sorted()
        #expect(times.count > 2)
        let low = times[1], high = times[times.count - 2]
        let between = Set(listed.filter { $0.study.time >= low && $0.study.time <= high }.map(\.study.studyUID))
        let upTo = Set(listed.filter { !$0.study.time.isEmpty && $0.study.time <= low }.map(\.study.studyUID))
        let hour = String(low.prefix(2))
        let inHour = Set(listed.filter { $0.study.time.hasPrefix(hour) }.map(\.study.studyUID))
        let total = listed.count
        try await s.app.test(.router) { client in
            let found11 = try await Self.studies(client, s, "StudyTime=\(low)-\(high)")
            #expect(found11 == between)
            let found12 = try await Self.studies(client, s, "StudyTime=-\(low)")
            #expect(found12 == upTo)
            let found13 = try await Self.studies(client, s, "StudyTime=\(hour)")
            #expect(found13 == inHour)
            for bad in ["StudyTime=25", "StudyTime=10-x", "StudyTime=1", "StudyDate=2023-13"] {
                let response = try await client.execute(uri: "/dicom-web/studies?" + bad, method: .get, headers: ServerInProcessTests.bearer(s.rad))
                #expect(response.status == .badRequest, "\(bad)")
                #expect(response.headers[.contentType] == "application/json")
            }
            let all = try await client.execute(uri: "/dicom-web/studies?includefield=all", method: .get, headers: ServerInProcessTests.bearer(s.rad))
            let objects = try Self.objects(all)
            #expect(objects.contains { $0["00080080"] != nil })  // InstitutionName, not a default
            #expect(objects.count == total)
        }
    }

    @Test func unsupportedMatchingIsNamedInAWarningNotIgnored() async throws {
        let s = try Served()
        try await s.app.test(.router) { client in
            let cases = [
                ("/dicom-web/studies?PatientName=doe*&fuzzymatching=true", "fuzzymatching"),
                ("/dicom-web/studies?NoSuchKey=1", "NoSuchKey"),
                ("/dicom-web/studies?NumberOfStudyRelatedSeries=1", "NumberOfStudyRelatedSeries"),
                ("/dicom-web/series?ModalitiesInStudy=CT", "ModalitiesInStudy"),
            ]
            for (uri, name) in cases {
                try await client.execute(uri: uri, method: .get, headers: ServerInProcessTests.bearer(s.rad)) { response in
                    #expect(response.status == .ok)
                    let warning = try #require(response.headers[.warning], "\(uri)")
                    #expect(warning.hasPrefix("299 localhost \"") && warning.hasSuffix("\"") && warning.contains(name), "\(warning)")
                }
            }
            try await client.execute(uri: "/dicom-web/studies?fuzzymatching=false&limit=1", method: .get, headers: ServerInProcessTests.bearer(s.rad)) { response in
                #expect(response.headers[.warning] == nil)
            }
        }
    }

    @Test func instancesOfAStudy() async throws {
        let s = try Served()
        let study = try #require(Corpus.shared.valid.first { $0.patient_id == "MRN0012345" }?.study_uid)
        let want = Set(Corpus.shared.valid.filter { $0.study_uid == study }.compactMap(\.sop_uid))
        try await s.app.test(.router) { client in
            let response = try await client.execute(uri: "/dicom-web/studies/\(study)/instances", method: .get, headers: ServerInProcessTests.bearer(s.rad))
            #expect(response.status == .ok)
            let objects = try Self.objects(response)
            #expect(Set(objects.flatMap { Self.strings($0, "00080018") }) == want && objects.count == want.count)
            #expect(objects.allSatisfy { Self.strings($0, "0020000D") == [study] })
            let none = try await client.execute(uri: "/dicom-web/studies/1.2.3/instances", method: .get, headers: ServerInProcessTests.bearer(s.rad))
            #expect(try Self.objects(none).isEmpty)
        }
        let record = try #require(s.requests("/dicom-web/studies/\(study)/instances").last)
        #expect(record.outcome == .ok && record.studyUIDs == [study])
    }

    @Test func personNamesAreSplitIntoGroups() {
        var o = DICOMJSONObject()
        o.setPerson(.patientName, "Yamada^Tarou=山田^太郎=やまだ^たろう")
        o.setPerson(.referringPhysicianName, "=山田")
        o.setPerson(.performingPhysicianName, "Doe^John")
        var out = ""
        o.write(into: &out)
        #expect(out.contains(#""00100010":{"vr":"PN","Value":[{"Alphabetic":"Yamada^Tarou","Ideographic":"山田^太郎","Phonetic":"やまだ^たろう"}]}"#))
        #expect(out.contains(#""00080090":{"vr":"PN","Value":[{"Ideographic":"山田"}]}"#))
        #expect(out.contains(#""00081050":{"vr":"PN","Value":[{"Alphabetic":"Doe^John"}]}"#))
        #expect(PersonName.matches(pattern: "*山田*", "Yamada^Tarou=山田^太郎=やまだ^たろう"))
        #expect(PersonName.matches(pattern: "*tarou", "Yamada^Tarou=山田^太郎=やまだ^たろう"))
        #expect(!PersonName.matches(pattern: "*鈴木*", "Yamada^Tarou=山田^太郎=やまだ^たろう"))
    }

    @Test func timeRangesFollowPartialTimes() throws {
        let r = try #require(TimeRange("10-1130"))
        #expect(r.contains("100000") && r.contains("113059.999") && r.contains("10:30") && !r.contains("113100") && !r.contains("095959"))
        #expect(TimeRange("1030")?.contains("103059") == true && TimeRange("1030")?.contains("103100") == false)
        for bad in ["", "-", "2400", "1", "10-11-12", "1060", "103000.", "ab"] { #expect(TimeRange(bad) == nil, "\(bad)") }
    }
}
