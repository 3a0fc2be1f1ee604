// DICOMweb routes (PS3.18): QIDO-RS search answers application/dicom+json; WADO-RS retrieval answers
// multipart/related; type="application/dicom", streamed from the decrypting reader.
import Foundation
import Hummingbird
import NIOCore
import VaultStore

enum WADO {
    /// GET …/studies/{s}/series/{se}/instances/{i}: one part.
    static func instance(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) async throws -> Response {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let sop = context.parameters.get("instance") ?? ""
        guard let item = try vault.instanceForRetrieval(study: study, series: series, instance: sop) else {
            throw APIError(.notFound, "no such instance")
        }
        return try await multipart([item], study: study, vault: vault, context: context)
    }

    /// GET …/studies/{s}/series/{se}: every instance of the series.
    static func series(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) async throws -> Response {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let items = try vault.instancesForRetrieval(study: study, series: series)
        guard !items.isEmpty else { throw APIError(.notFound, "no such series") }
        return try await multipart(items, study: study, vault: vault, context: context)
    }

    /// GET …/studies/{s}: every instance of the study.
    static func study(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) async throws -> Response {
        let study = context.parameters.get("study") ?? ""
        let items = try vault.instancesForRetrieval(study: study)
        guard !items.isEmpty else { throw APIError(.notFound, "no such study") }
        return try await multipart(items, study: study, vault: vault, context: context)
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

    /// multipart/related; type="application/dicom", one part per instance (`OrderedRetrieval`: a few
    /// instances decrypted at once, in order, a bounded distance ahead of the client). An instance
    /// stored without a Part 10 header gets a generated file meta in front of its unchanged bytes
    /// (PS3.18 8.7.3.5.1: application/dicom is PS3.10). The total length is known in advance: sizes are
    /// in the catalog, and the meta is built from each header-less instance's start before the response
    /// starts (an instance with a header costs one decrypted chunk to check; the threads share the checks).
    static func multipart(_ items: [RetrievableInstance], study: String, vault: Vault, context: VaultRequestContext) async throws -> Response {
        let channel = context.channel
        let boundary = "medvault-" + UUID().uuidString
        var headers = HTTPFields()
        headers[.contentType] = "multipart/related; type=\"application/dicom\"; boundary=\(boundary)"
        // Released unread (HEAD), the retrieval stops its threads.
        let retrieval = OrderedRetrieval(try vault.retrievalSource(items), boundary: boundary)
        let parts = await retrieval.layout()
        // The bytes of the instances sent (file meta included), known up front: recorded when the response starts.
        context.recordDisclosure(studies: [study], patients: items.map(\.patientID), instances: items.count, bytes: parts.bytes)
        let body = ResponseBody(contentLength: parts.contentLength) { writer in
            defer { retrieval.cancel() }
            while let buffers = try await retrieval.next() {
                // A client that went away stops the work: no more decryption for nobody.
                guard channel.isActive else { throw CancellationError() }
                try await writer.write(contentsOf: buffers)
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }
}
