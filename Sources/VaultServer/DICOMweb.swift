// DICOMweb routes (PS3.18): QIDO-RS search answers application/dicom+json; WADO-RS retrieval answers
// multipart/related; type="application/dicom", streamed from the decrypting reader.
import Foundation
import Hummingbird
import NIOCore
import VaultStore

enum WADO {
    /// GET …/studies/{s}/series/{se}/instances/{i}: one part.
    static func instance(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let sop = context.parameters.get("instance") ?? ""
        guard let item = try vault.instanceForRetrieval(study: study, series: series, instance: sop) else {
            throw APIError(.notFound, "no such instance")
        }
        return multipart([item], study: study, vault: vault, context: context)
    }

    /// GET …/studies/{s}/series/{se}: every instance of the series.
    static func series(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let items = try vault.instancesForRetrieval(study: study, series: series)
        guard !items.isEmpty else { throw APIError(.notFound, "no such series") }
        return multipart(items, study: study, vault: vault, context: context)
    }

    /// GET …/studies/{s}: every instance of the study.
    static func study(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        let study = context.parameters.get("study") ?? ""
        let items = try vault.instancesForRetrieval(study: study)
        guard !items.isEmpty else { throw APIError(.notFound, "no such study") }
        return multipart(items, study: study, vault: vault, context: context)
    }

    /// GET …/metadata at study, series or instance level: a DICOM JSON array, one object per instance,
    /// Pixel Data and binary values over 1 KiB as BulkDataURIs (WADOPixels.metadataObject).
    static func metadata(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        let study = context.parameters.get("study") ?? ""
        let series = context.parameters.get("series"), sop = context.parameters.get("instance")
        let items: [RetrievableInstance]
        if let sop, let series {
            items = try vault.instanceForRetrieval(study: study, series: series, instance: sop).map { [$0] } ?? []
        } else {
            items = try vault.instancesForRetrieval(study: study, series: series, sopInstanceUIDs: true)
        }
        guard !items.isEmpty else { throw APIError(.notFound, "not found") }
        var json = "["
        for (i, item) in items.enumerated() {
            if i > 0 { json += "," }
            json += try WADOPixels.metadataObject(vault, item, request)
        }
        json += "]"
        var headers = HTTPFields()
        headers[.contentType] = "application/dicom+json"
        context.recordDisclosure(studies: [study], patients: items.map(\.patientID), instances: items.count)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: json)))
    }

    /// multipart/related; type="application/dicom", one part per instance, each streamed as it is
    /// decrypted. An instance stored without a Part 10 header gets a generated file meta in front of its
    /// unchanged bytes (PS3.18 8.7.3.5.1: application/dicom is PS3.10). The total length is known in
    /// advance: sizes are in the catalog, and the meta is built from each header-less instance's start
    /// before the response starts (an instance with a header costs one decrypted chunk to check).
    static func multipart(_ items: [RetrievableInstance], study: String, vault: Vault, context: VaultRequestContext) -> Response {
        let channel = context.channel
        let boundary = "medvault-" + UUID().uuidString
        var headers = HTTPFields()
        headers[.contentType] = "multipart/related; type=\"application/dicom\"; boundary=\(boundary)"
        let metas: [[UInt8]] = items.map { ((try? vault.part10FileMeta($0)) ?? nil) ?? [] }
        let sizes = zip(items, metas).map { $0.size + Int64($1.count) }
        // The bytes of the instances sent (file meta included), known up front: recorded when the response starts.
        context.recordDisclosure(studies: [study], patients: items.map(\.patientID), instances: items.count, bytes: sizes.reduce(0, +))
        @Sendable func partHead(_ i: Int) -> String {
            (i == 0 ? "" : "\r\n") + "--\(boundary)\r\nContent-Type: application/dicom\r\nContent-Length: \(sizes[i])\r\n\r\n"
        }
        let tail = "\r\n--\(boundary)--\r\n"
        let length = sizes.indices.reduce(tail.utf8.count) { $0 + partHead($1).utf8.count + Int(sizes[$1]) }
        let body = ResponseBody(contentLength: length) { writer in
            // The next instance is already being decrypted while this one is sent (a few chunks ahead,
            // bounded like the current one), so the two cores overlap decryption and sending.
            var upcoming: DecryptingStream? = items.first.map { DecryptingStream(item: $0, vault: vault) }
            defer { upcoming?.cancel() }
            for (i, item) in items.enumerated() {
                guard let stream = upcoming else { break }
                defer { stream.cancel() }
                upcoming = i + 1 < items.count ? DecryptingStream(item: items[i + 1], vault: vault) : nil
                try await writer.write(ByteBuffer(string: partHead(i)))
                if !metas[i].isEmpty { try await writer.write(ByteBuffer(bytes: metas[i])) }
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
    /// At most `window` decrypted chunks wait for the client. The semaphore starts at 0 and is signalled
    /// `window` times: libdispatch kills the process when a semaphore is freed below its *initial* value,
    /// which an aborted stream (chunks taken, never consumed) would otherwise do.
    private static let window = 4
    private let gate = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var cancelled = false
    let chunks: AsyncThrowingStream<ByteBuffer, any Error>
    private let continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation

    init(item: RetrievableInstance, vault: Vault) {
        for _ in 0..<Self.window { gate.signal() }
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
