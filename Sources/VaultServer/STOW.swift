// STOW-RS (PS3.18 §10.5): POST …/studies and …/studies/{study} with a multipart/related body of
// application/dicom parts. Each part is streamed into memory, or past the request's memory budget
// sealed into an unnamed file (`IncomingInstance`: never clear on disk), and all of them are imported through the engine's import path as one change: sealed, filed, audited
// as an import by the account, published as a snapshot. The answer is the PS3.18 Store Instances
// Response Module in DICOM JSON.
import Foundation
import Hummingbird
import NIOCore
import VaultCatalog
import VaultStore

enum STOW {
    /// Failure reasons of the response's Failed SOP Sequence (PS3.18 §10.5.3, PS3.4 Annex B).
    enum FailureReason: UInt16 {
        /// The part is not a DICOM instance we can read (malformed, not DICOM, not application/dicom).
        case cannotUnderstand = 0xC000
        /// The instance belongs to another study than the request's …/studies/{study}.
        case studyMismatch = 0xA900
        /// Another instance with this SOP Instance UID, different bytes, is already stored.
        case duplicateSOPInstance = 0x0111
        /// The part is over the size limit, or the disk is full.
        case outOfResources = 0xA700
        /// An I/O error while storing it.
        case processingFailure = 0x0110
    }

    static func store(
        _ vault: Vault, _ request: Request, _ context: VaultRequestContext, study: String?, limits: ServerLimits
    ) async throws -> Response {
        guard let account = context.account, account.role == .admin || account.role == .radiologist else {
            throw APIError(.forbidden, "this account may not store instances (radiologist or admin only)")
        }
        let boundary = try multipartBoundary(request.headers[.contentType])
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared > limits.maxStoreBytes {
            throw APIError(.contentTooLarge, "the request is larger than the limit of \(limits.maxStoreBytes) bytes")
        }
        let parts = try await receive(vault, request.body, boundary: boundary, limits: limits)
        let instances = parts.compactMap { if case .instance(let i) = $0 { i } else { nil } }
        let actor = AuditActor(name: account.name, role: account.role.rawValue, peerUID: context.peer?.uid, peerPID: context.peer?.pid)
        let options = { var o = ImportOptions(); o.requiredStudyUID = study; return o }()
        let summary: ImportSummary?
        if instances.isEmpty {
            summary = nil
        } else {
            do {
                // Off the event loop: the import waits for the writer lock and fsyncs.
                summary = try await withCheckedThrowingContinuation { continuation in
                    DispatchQueue.global().async {
                        continuation.resume(with: Result { try vault.importIncoming(instances, options: options, by: actor) })
                    }
                }
            } catch let aborted as ImportAborted {
                // Disk full or the catalog could not commit: nothing of the unfinished batch is visible.
                throw APIError(.serviceUnavailable, "the instances were not stored: \(aborted.reason)")
            }
        }
        if let summary {
            // The request's record names what it stored (the import's own record has the same, with the account).
            context.recordDisclosure(studies: summary.studyUIDs, patients: summary.patientIDs, instances: summary.count("imported"))
        }
        return answer(parts: parts, results: summary?.results ?? [], study: study, request: request)
    }

    /// The boundary of a `multipart/related; type="application/dicom"` body, or 415.
    static func multipartBoundary(_ contentType: String?) throws -> String {
        guard let contentType, let media = MediaType(contentType), media.type == "multipart/related" else {
            throw APIError(.unsupportedMediaType, "STOW-RS takes multipart/related; type=\"application/dicom\"")
        }
        if let type = media.parameters["type"], type.lowercased() != "application/dicom" {
            throw APIError(.unsupportedMediaType, "only application/dicom parts are accepted, not \(type)")
        }
        guard let boundary = media.parameters["boundary"], !boundary.isEmpty, boundary.utf8.count <= 70 else {
            throw APIError(.badRequest, "the multipart/related content type has no valid boundary")
        }
        return boundary
    }

    /// A part as received: an instance in memory, or refused before import.
    enum Part {
        case instance(IncomingInstance)
        case refused(FailureReason)
    }

    /// Streams the body into parts. Each part goes to memory as it arrives; the whole request is
    /// bounded by `maxStoreBytes`.
    static func receive(_ vault: Vault, _ body: RequestBody, boundary: String, limits: ServerLimits) async throws -> [Part] {
        var reader = MultipartReader(boundary: boundary)
        var receiver = PartCollector(vault: vault, maxBytes: limits.maxStoreBytes, memoryBudget: limits.storeMemoryBytes)
        var total: Int64 = 0
        for try await buffer in body {
            total += Int64(buffer.readableBytes)
            guard total <= limits.maxStoreBytes else {
                throw APIError(.contentTooLarge, "the request is larger than the limit of \(limits.maxStoreBytes) bytes")
            }
            do {
                try buffer.withUnsafeReadableBytes { try reader.feed($0, to: &receiver) }
            } catch let e as MultipartError {
                throw APIError(.badRequest, "the multipart body is malformed: \(e.message)")
            }
        }
        do { try reader.finish() } catch let e as MultipartError { throw APIError(.badRequest, "the multipart body is malformed: \(e.message)") }
        guard !receiver.parts.isEmpty else { throw APIError(.badRequest, "the request holds no instance") }
        return receiver.parts
    }

    /// Receives each part into an `IncomingInstance`: in memory while the request's memory budget
    /// lasts, sealed on disk past it.
    struct PartCollector: MultipartReceiver {
        let vault: Vault
        let maxBytes: Int64
        /// Clear bytes the request may still hold in memory.
        private var memoryBudget: Int64
        var parts: [Part] = []
        private var current: IncomingInstance?
        private var refused: FailureReason?

        init(vault: Vault, maxBytes: Int64, memoryBudget: Int64) {
            self.vault = vault
            self.maxBytes = maxBytes
            self.memoryBudget = memoryBudget
        }

        mutating func partBegan(headers: [String: String]) throws {
            refused = nil
            current = nil
            // A part without Content-Type has the multipart's `type` (application/dicom).
            if let type = headers["content-type"].flatMap(MediaType.init), type.type != "application/dicom" {
                refused = .cannotUnderstand  // not application/dicom
                return
            }
            do { current = try IncomingInstance(maxBytes: maxBytes, memoryLimit: memoryBudget, spillingInto: vault) } catch {
                throw APIError(.serviceUnavailable, "cannot receive the instance: \(error)")
            }
        }

        mutating func partBytes(_ bytes: UnsafeRawBufferPointer) throws {
            guard let current else { return }
            do { try current.append(bytes) } catch { throw Self.receiveError(error) }
        }

        mutating func partEnded() throws {
            if let current {
                do { try current.finish() } catch { throw Self.receiveError(error) }
                memoryBudget -= current.memoryBytes
            }
            if let refused { parts.append(.refused(refused)) } else if let current { parts.append(.instance(current)) }
            current = nil
            refused = nil
        }

        static func receiveError(_ error: IncomingInstance.Failure) -> APIError {
            switch error {
            case .tooLarge: APIError(.contentTooLarge, "cannot receive the instance: \(error)")
            case .io(let e): APIError(.serviceUnavailable, "cannot receive the instance: \(e)")
            }
        }
    }

    /// The Store Instances Response (PS3.18 §10.5.3) and its status: 200 all stored, 202 some
    /// failed, 409 none stored.
    static func answer(parts: [Part], results: [ImportFileResult], study: String?, request: Request) -> Response {
        var stored: [[String: Any]] = []
        var failed: [[String: Any]] = []
        var next = results.makeIterator()
        for part in parts {
            switch part {
            case .refused(let reason):
                failed.append(failure(nil, reason))
            case .instance:
                guard let result = next.next() else { continue }
                if let reason = failureReason(result, study: study) {
                    failed.append(failure(result.identity, reason))
                } else if let id = result.identity {
                    var item = reference(id)
                    item["00081190"] = ["vr": "UR", "Value": [retrieveURL(id, request: request)]]
                    stored.append(item)
                }
            }
        }
        var json: [String: Any] = [:]
        if let study { json["00081190"] = ["vr": "UR", "Value": [baseURL(request) + "/studies/" + study]] }
        json["00081199"] = stored.isEmpty ? ["vr": "SQ"] : ["vr": "SQ", "Value": stored]
        if !failed.isEmpty { json["00081198"] = ["vr": "SQ", "Value": failed] }
        let data = (try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/dicom+json"
        let status: HTTPResponse.Status = failed.isEmpty ? .ok : (stored.isEmpty ? .conflict : .accepted)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func failureReason(_ result: ImportFileResult, study: String?) -> FailureReason? {
        switch result.outcome {
        case .imported, .alreadyPresent: return nil
        case .conflict: return .duplicateSOPInstance
        case .failed: return .processingFailure
        case .rejected, .skipped:
            if let study, let id = result.identity, id.studyInstanceUID != study { return .studyMismatch }
            return .cannotUnderstand
        }
    }

    static func reference(_ id: InstanceIdentity) -> [String: Any] {
        var item: [String: Any] = ["00081155": ["vr": "UI", "Value": [id.sopInstanceUID]]]
        if let sopClass = id.sopClassUID { item["00081150"] = ["vr": "UI", "Value": [sopClass]] }
        return item
    }

    static func failure(_ id: InstanceIdentity?, _ reason: FailureReason) -> [String: Any] {
        var item = id.map(reference) ?? [:]
        item["00081197"] = ["vr": "US", "Value": [Int(reason.rawValue)]]
        return item
    }

    /// The URL prefix the client used, up to and including /dicom-web.
    static func baseURL(_ request: Request) -> String {
        let path = request.uri.path
        guard let range = path.range(of: "/dicom-web") else { return "/dicom-web" }
        return String(path[..<range.upperBound])
    }

    static func retrieveURL(_ id: InstanceIdentity, request: Request) -> String {
        baseURL(request) + "/studies/\(id.studyInstanceUID)/series/\(id.seriesInstanceUID)/instances/\(id.sopInstanceUID)"
    }
}
