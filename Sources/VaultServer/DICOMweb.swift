// DICOMweb routes (PS3.18): QIDO-RS search answers application/dicom+json; WADO-RS retrieval answers
// multipart/related; type="application/dicom", streamed from the decrypting reader.
import Foundation
import Hummingbird
import NIOCore
import VaultStore

enum QIDO {
    /// A query value by keyword or tag, nil when absent or empty.
    static func value(_ request: Request, _ key: String, _ tag: String) -> String? {
        let q = request.uri.queryParameters
        return (q[key[...]] ?? q[tag[...]]).map(String.init).flatMap { $0.isEmpty ? nil : $0 }
    }

    static func page<T>(_ items: [T], _ request: Request) -> [T] {
        let offset = max(0, Int(value(request, "offset", "offset") ?? "") ?? 0)
        let limit = max(0, Int(value(request, "limit", "limit") ?? "") ?? Int.max)
        return Array(items.dropFirst(offset).prefix(limit))
    }

    /// A DICOM JSON object (PS3.18 F.2) under construction.
    struct Object {
        var fields: [String: Any] = [:]
        mutating func put(_ tag: String, _ vr: String, _ v: String) { if !v.isEmpty { fields[tag] = ["vr": vr, "Value": [v]] } }
        mutating func person(_ tag: String, _ v: String) { if !v.isEmpty { fields[tag] = ["vr": "PN", "Value": [["Alphabetic": v]]] } }
        mutating func number(_ tag: String, _ vr: String, _ v: String) {
            if let n = Int(v.trimmingCharacters(in: .whitespaces)) { fields[tag] = ["vr": vr, "Value": [n]] }
        }
    }

    static func answer(_ objects: [Object], patients: [String], studies: [String]) -> Response {
        let body = (try? JSONSerialization.data(withJSONObject: objects.map(\.fields), options: [.sortedKeys])) ?? Data("[]".utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/dicom+json"
        headers[APIHeaders.auditPatients] = Array(Set(patients)).sorted().joined(separator: ",")
        headers[APIHeaders.auditStudies] = Array(Set(studies)).sorted().joined(separator: ",")
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func patientFields(_ o: inout Object, _ p: PatientRecord) {
        o.person("00100010", p.name)
        o.put("00100020", "LO", p.patientID)
        o.put("00100030", "DA", p.birthDate)
        o.put("00100040", "CS", p.sex)
    }

    /// GET /dicom-web/series and /studies/{s}/series: Modality, SeriesInstanceUID, SeriesNumber, plus the
    /// patient and study keys.
    static func series(_ vault: Vault, _ request: Request, _ context: ServerContext, study: String?) throws -> Response {
        var rows = try vault.listSeries(patientID: value(request, "PatientID", "00100020"))
        if let study { rows = rows.filter { $0.study.studyUID == study } }
        if let uid = value(request, "StudyInstanceUID", "0020000D") { rows = rows.filter { $0.study.studyUID == uid } }
        if let name = value(request, "PatientName", "00100010") { rows = rows.filter { Wildcard.matches(pattern: name, $0.patient.name) } }
        if let m = value(request, "Modality", "00080060") { rows = rows.filter { $0.series.modality == m } }
        if let uid = value(request, "SeriesInstanceUID", "0020000E") { rows = rows.filter { $0.series.seriesUID == uid } }
        if let n = value(request, "SeriesNumber", "00200011") { rows = rows.filter { $0.series.number == n } }
        let shown = page(rows, request)
        return answer(shown.map { s in
            var o = Object()
            patientFields(&o, s.patient)
            o.put("0020000D", "UI", s.study.studyUID)
            o.put("00080060", "CS", s.series.modality)
            o.put("0020000E", "UI", s.series.seriesUID)
            o.number("00200011", "IS", s.series.number)
            o.put("0008103E", "LO", s.series.description)
            o.fields["00201209"] = ["vr": "IS", "Value": [s.instances]]
            return o
        }, patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID))
    }

    /// GET /dicom-web/instances and /studies/{s}/series/{se}/instances.
    static func instances(_ vault: Vault, _ request: Request, _ context: ServerContext, study: String?, series: String?) throws -> Response {
        var rows = try vault.listInstances(patientID: value(request, "PatientID", "00100020"))
        if let study { rows = rows.filter { $0.study.studyUID == study } }
        if let series { rows = rows.filter { $0.series.seriesUID == series } }
        if let uid = value(request, "StudyInstanceUID", "0020000D") { rows = rows.filter { $0.study.studyUID == uid } }
        if let uid = value(request, "SeriesInstanceUID", "0020000E") { rows = rows.filter { $0.series.seriesUID == uid } }
        if let uid = value(request, "SOPInstanceUID", "00080018") { rows = rows.filter { $0.instance.sopInstanceUID == uid } }
        if let m = value(request, "Modality", "00080060") { rows = rows.filter { $0.series.modality == m } }
        let shown = page(rows, request)
        return answer(shown.map { i in
            var o = Object()
            patientFields(&o, i.patient)
            o.put("0020000D", "UI", i.study.studyUID)
            o.put("0020000E", "UI", i.series.seriesUID)
            o.put("00080060", "CS", i.series.modality)
            o.put("00080016", "UI", i.instance.sopClassUID)
            o.put("00080018", "UI", i.instance.sopInstanceUID)
            o.number("00200013", "IS", i.instance.number)
            o.number("00280010", "US", i.instance.rows)
            o.number("00280011", "US", i.instance.columns)
            o.number("00280008", "IS", i.instance.frames)
            o.put("00083002", "UI", i.instance.transferSyntaxUID)
            return o
        }, patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID))
    }

    /// GET /dicom-web/studies with PatientID, PatientName (* and ? wildcards), StudyDate (a date or a
    /// range a-b, a-, -b), ModalitiesInStudy, StudyInstanceUID, AccessionNumber, limit, offset.
    static func studies(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        var studies = try vault.listStudies(patientID: value(request, "PatientID", "00100020"))
        if let name = value(request, "PatientName", "00100010") {
            studies = studies.filter { Wildcard.matches(pattern: name, $0.patient.name) }
        }
        if let range = value(request, "StudyDate", "00080020") {
            studies = studies.filter { DateRange(range)?.contains($0.study.date) ?? false }
        }
        if let modality = value(request, "ModalitiesInStudy", "00080061") {
            let wanted = Set(modality.split(separator: ",").map { String($0) })
            studies = studies.filter { !wanted.isDisjoint(with: $0.modalities) }
        }
        if let uid = value(request, "StudyInstanceUID", "0020000D") {
            let wanted = Set(uid.split(separator: ",").map { String($0) })
            studies = studies.filter { wanted.contains($0.study.studyUID) }
        }
        if let acc = value(request, "AccessionNumber", "00080050") { studies = studies.filter { $0.study.accessionNumber == acc } }
        let shown = page(studies, request)
        return answer(shown.map { s in
            var o = Object()
            patientFields(&o, s.patient)
            o.put("00080020", "DA", s.study.date)
            o.put("00080030", "TM", s.study.time)
            o.put("00080050", "SH", s.study.accessionNumber)
            if !s.modalities.isEmpty { o.fields["00080061"] = ["vr": "CS", "Value": s.modalities] }
            o.person("00080090", s.study.referringPhysician)
            o.put("00081030", "LO", s.study.description)
            o.put("0020000D", "UI", s.study.studyUID)
            o.put("00200010", "SH", s.study.studyID)
            o.fields["00201206"] = ["vr": "IS", "Value": [s.series]]
            o.fields["00201208"] = ["vr": "IS", "Value": [s.instances]]
            return o
        }, patients: shown.map(\.patient.patientID), studies: shown.map(\.study.studyUID))
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
        return multipart([item], study: study, vault: vault, channel: context.channel)
    }

    /// GET …/studies/{s}/series/{se}: every instance of the series.
    static func series(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let items = try vault.instancesForRetrieval(study: study, series: series)
        guard !items.isEmpty else { return APIError.response(.notFound, "no such series") }
        return multipart(items, study: study, vault: vault, channel: context.channel)
    }

    /// GET …/studies/{s}: every instance of the study.
    static func study(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        let study = context.parameters.get("study") ?? ""
        let items = try vault.instancesForRetrieval(study: study)
        guard !items.isEmpty else { return APIError.response(.notFound, "no such study") }
        return multipart(items, study: study, vault: vault, channel: context.channel)
    }

    /// GET …/metadata at study, series or instance level: a DICOM JSON array, one object per instance,
    /// without pixel data.
    static func metadata(_ vault: Vault, _ request: Request, _ context: ServerContext) throws -> Response {
        let study = context.parameters.get("study") ?? ""
        let series = context.parameters.get("series"), sop = context.parameters.get("instance")
        let items: [RetrievableInstance]
        if let sop, let series {
            items = try vault.instanceForRetrieval(study: study, series: series, instance: sop).map { [$0] } ?? []
        } else {
            items = try vault.instancesForRetrieval(study: study, series: series)
        }
        guard !items.isEmpty else { return APIError.response(.notFound, "not found") }
        var json = "["
        for (i, item) in items.enumerated() {
            if i > 0 { json += "," }
            json += try vault.metadataJSON(item)
        }
        json += "]"
        var headers = HTTPFields()
        headers[.contentType] = "application/dicom+json"
        headers[APIHeaders.auditStudies] = study
        headers[APIHeaders.auditPatients] = Array(Set(items.map(\.patientID))).sorted().joined(separator: ",")
        headers[APIHeaders.auditInstances] = "\(items.count)"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: json)))
    }

    /// multipart/related; type="application/dicom", one part per instance, each streamed as it is
    /// decrypted. The total length is known in advance (sizes are in the catalog).
    static func multipart(_ items: [RetrievableInstance], study: String, vault: Vault, channel: any Channel) -> Response {
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
                    // A client that went away stops the work: no more decryption for nobody.
                    guard channel.isActive else { throw CancellationError() }
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
