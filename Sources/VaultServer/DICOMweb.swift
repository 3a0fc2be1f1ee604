// DICOMweb routes (PS3.18): QIDO-RS search answers application/dicom+json; WADO-RS retrieval answers
// multipart/related; type="application/dicom", streamed from the decrypting reader.
import Foundation
import Hummingbird
import NIOCore
import VaultStore

enum QIDO {
    /// GET /dicom-web/studies with PatientID, PatientName (* and ? wildcards), StudyDate (a date or a
    /// range a-b, a-, -b), ModalitiesInStudy, StudyInstanceUID, AccessionNumber, limit, offset.
    static func studies(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        let q = request.uri.queryParameters
        func value(_ key: String) -> String? { q[key[...]].map(String.init).flatMap { $0.isEmpty ? nil : $0 } }
        var studies = try vault.listStudies(patientID: value("PatientID") ?? value("00100020"))
        if let name = value("PatientName") ?? value("00100010") {
            studies = studies.filter { Wildcard.matches(pattern: name, $0.patient.name) }
        }
        if let range = value("StudyDate") ?? value("00080020") {
            studies = studies.filter { DateRange(range)?.contains($0.study.date) ?? false }
        }
        if let modality = value("ModalitiesInStudy") ?? value("00080061") {
            let wanted = Set(modality.split(separator: ",").map { String($0) })
            studies = studies.filter { !wanted.isDisjoint(with: $0.modalities) }
        }
        if let uid = value("StudyInstanceUID") ?? value("0020000D") {
            let wanted = Set(uid.split(separator: ",").map { String($0) })
            studies = studies.filter { wanted.contains($0.study.studyUID) }
        }
        if let acc = value("AccessionNumber") ?? value("00080050") { studies = studies.filter { $0.study.accessionNumber == acc } }
        let offset = max(0, Int(value("offset") ?? "") ?? 0)
        let limit = max(0, Int(value("limit") ?? "") ?? Int.max)
        let page = Array(studies.dropFirst(offset).prefix(limit))
        let json = page.map { s -> [String: Any] in
            var o: [String: Any] = [:]
            func put(_ tag: String, _ vr: String, _ v: String) { if !v.isEmpty { o[tag] = ["vr": vr, "Value": [v]] } }
            func person(_ tag: String, _ v: String) { if !v.isEmpty { o[tag] = ["vr": "PN", "Value": [["Alphabetic": v]]] } }
            put("00080020", "DA", s.study.date)
            put("00080030", "TM", s.study.time)
            put("00080050", "SH", s.study.accessionNumber)
            if !s.modalities.isEmpty { o["00080061"] = ["vr": "CS", "Value": s.modalities] }
            person("00080090", s.study.referringPhysician)
            put("00081030", "LO", s.study.description)
            person("00100010", s.patient.name)
            put("00100020", "LO", s.patient.patientID)
            put("00100030", "DA", s.patient.birthDate)
            put("00100040", "CS", s.patient.sex)
            put("0020000D", "UI", s.study.studyUID)
            put("00200010", "SH", s.study.studyID)
            o["00201206"] = ["vr": "IS", "Value": [s.series]]
            o["00201208"] = ["vr": "IS", "Value": [s.instances]]
            return o
        }
        let body = (try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])) ?? Data("[]".utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/dicom+json"
        headers[APIHeaders.auditPatients] = Array(Set(page.map(\.patient.patientID))).sorted().joined(separator: ",")
        headers[APIHeaders.auditStudies] = page.map(\.study.studyUID).joined(separator: ",")
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

enum WADO {
    /// GET …/studies/{s}/series/{se}/instances/{i}: one part.
    static func instance(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let sop = context.parameters.get("instance") ?? ""
        guard let item = try vault.instanceForRetrieval(study: study, series: series, instance: sop) else {
            return APIError.response(.notFound, "no such instance")
        }
        return multipart([item], study: study, vault: vault)
    }

    /// GET …/studies/{s}/series/{se}: every instance of the series.
    static func series(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let items = try vault.instancesForRetrieval(study: study, series: series)
        guard !items.isEmpty else { return APIError.response(.notFound, "no such series") }
        return multipart(items, study: study, vault: vault)
    }

    /// GET …/studies/{s}: every instance of the study.
    static func study(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        let study = context.parameters.get("study") ?? ""
        let items = try vault.instancesForRetrieval(study: study)
        guard !items.isEmpty else { return APIError.response(.notFound, "no such study") }
        return multipart(items, study: study, vault: vault)
    }

    /// multipart/related; type="application/dicom", one part per instance, each streamed as it is
    /// decrypted. The total length is known in advance (sizes are in the catalog).
    static func multipart(_ items: [RetrievableInstance], study: String, vault: Vault) -> Response {
        let boundary = "medvault-" + UUID().uuidString
        var headers = HTTPFields()
        headers[.contentType] = "multipart/related; type=\"application/dicom\"; boundary=\(boundary)"
        headers[APIHeaders.auditStudies] = study
        headers[APIHeaders.auditPatients] = Array(Set(items.map(\.patientID))).sorted().joined(separator: ",")
        headers[APIHeaders.auditInstances] = "\(items.count)"
        @Sendable func partHead(_ item: RetrievableInstance, first: Bool) -> String {
            (first ? "" : "\r\n") + "--\(boundary)\r\nContent-Type: application/dicom\r\nContent-Length: \(item.size)\r\n\r\n"
        }
        let tail = "\r\n--\(boundary)--\r\n"
        let length = items.enumerated().reduce(tail.utf8.count) { $0 + partHead($1.element, first: $1.offset == 0).utf8.count + Int($1.element.size) }
        let body = ResponseBody(contentLength: length) { writer in
            for (i, item) in items.enumerated() {
                try await writer.write(ByteBuffer(string: partHead(item, first: i == 0)))
                let stream = DecryptingStream(item: item, vault: vault)
                defer { stream.cancel() }
                for try await chunk in stream.chunks {
                    try await writer.write(chunk)
                    stream.consumed()
                }
            }
            try await writer.write(ByteBuffer(string: tail))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }
}

/// Bridges the synchronous decrypting reader to an async sequence of buffers, with back-pressure: the
/// reader thread waits until the client has taken the previous chunks (memory stays flat), and stops
/// when the consumer goes away (a client that disconnects stops the work).
final class DecryptingStream: @unchecked Sendable {
    private let gate = DispatchSemaphore(value: 4)
    private let lock = NSLock()
    private var cancelled = false
    let chunks: AsyncThrowingStream<ByteBuffer, any Error>
    private let continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation

    init(item: RetrievableInstance, vault: Vault) {
        (chunks, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        continuation.onTermination = { [weak self] _ in self?.cancel() }
        let continuation = self.continuation
        Thread { [self] in
            do {
                try vault.stream(item) { bytes in
                    self.gate.wait()
                    if self.isCancelled { throw CancellationError() }
                    continuation.yield(ByteBuffer(bytes: bytes))
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }.start()
    }

    /// Called by the consumer after it has written a chunk: lets the reader decrypt one more.
    func consumed() { gate.signal() }

    func cancel() {
        lock.lock(); cancelled = true; lock.unlock()
        gate.signal()
    }

    private var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelled }
}
