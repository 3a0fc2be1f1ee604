// WADO-RS bulk data besides Pixel Data (PS3.18 §9.6.1.3): the binary values `/metadata` names by a
// BulkDataURI (`…/bulkdata/60003000`, `…/bulkdata/00880200/0/7FE00010`). They lie before the Pixel
// Data, so they are read from the same decrypted header as `/metadata`, in memory only, and sent
// through the same answers as the Pixel Data value (WADOFrames.swift, `BulkAnswer`).
import Hummingbird
import HTTPTypes
import NIOCore
import VaultDICOM
import VaultStore

/// Where a bulk data answer's bytes come from.
enum BulkSource: Sendable {
    /// Stream ranges of the instance, decrypted as they are sent (the Pixel Data value).
    case stream(InstanceFrameReader)
    /// A value already read, whose byte ranges are sent (an element before the Pixel Data).
    case memory(ByteBuffer)

    /// Writes the bytes `range` of the source.
    func send(_ range: Range<UInt64>, channel: any Channel, to writer: inout any ResponseBodyWriter) async throws {
        switch self {
        case .stream(let frames): try await WADOPixels.stream(frames, range, channel: channel, to: &writer)
        case .memory(let value):
            guard channel.isActive else { throw CancellationError() }
            guard let slice = value.getSlice(at: value.readerIndex + Int(range.lowerBound), length: range.count) else {
                throw APIError(.internalServerError, "a bulk data range is outside its value")
            }
            try await writer.write(slice)
        }
    }

    /// Stops decrypting (a stream); nothing to do for a value in memory.
    func close() {
        if case .stream(let frames) = self { frames.close() }
    }
}

extension WADOPixels {
    /// The value of the binary element at `path` (not the top-level Pixel Data), little endian (an
    /// Explicit VR Big Endian instance's words are swapped, as PS3.18 sends bulk data): multipart, one
    /// part (the default), or single part with `Range`, exactly as the Pixel Data value.
    static func elementBulkData(
        _ vault: Vault, _ item: RetrievableInstance, _ ids: (study: String, series: String, sop: String), _ path: DICOMElementPath,
        _ request: Request, _ context: VaultRequestContext
    ) throws -> Response {
        guard let single = negotiateBulk(accept: acceptRanges(request), storedSyntax: explicitVRLittleEndian) else {
            throw APIError(
                .notAcceptable,
                "bulk data is sent as application/octet-stream (single part) or multipart/related; type=\"application/octet-stream\", in \(explicitVRLittleEndian)")
        }
        let value: ByteBuffer
        do {
            value = try vault.withBinaryValue(item, at: path) { ByteBuffer(bytes: $0.bytes) }
        } catch DICOMError.noSuchElement(let reason) {
            throw APIError(.notFound, "no bulk data at \(path): \(reason)")
        } catch DICOMError.malformed(let reason) {
            throw APIError(.internalServerError, "the stored instance's header cannot be read: \(reason)")
        } catch {
            throw pixelError(error)
        }
        let answer = BulkAnswer(
            source: .memory(value), partType: "application/octet-stream; transfer-syntax=\(explicitVRLittleEndian)", study: ids.study,
            patient: item.patientID, context: context)
        let whole = UInt64(0)..<UInt64(value.readableBytes)
        return single ? try answer.singlePart(whole, range: request.headers[.range]) : answer.multipart([[whole]])
    }
}
