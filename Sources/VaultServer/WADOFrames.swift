// WADO-RS pixel routes (PS3.18 §9.4, §9.5, §9.6.1.3 and §9.7): frames, bulk data, rendered and
// thumbnail. Every one reads the instance through the decrypting reader (InstanceFrameReader) and only
// as far as it needs; clear bytes go to the client and nowhere else. docs/api.md has the conformance table.
import Foundation
import Hummingbird
import HTTPTypes
import NIOCore
import VaultDICOM
import VaultStore

enum WADOPixels {
    /// The routes, under `/dicom-web`.
    static func register(on group: RouterGroup<VaultRequestContext>, vault: Vault) {
        let instance = "studies/:study/series/:series/instances/:instance"
        // Every one sends pixel data, or an image made from it: a retrieval.
        group.get("\(instance)/frames/:frames", access: .retrieve) { request, context in try frames(vault, request, context) }
        // `**`: a nested element's path has several segments (`00880200/0/7FE00010`; WADOBulkData.swift).
        group.get("\(instance)/bulkdata/**", access: .retrieve) { request, context in try bulkData(vault, request, context) }
        for kind in RenderKind.allCases {
            group.get("\(instance)/frames/:frames/\(kind.rawValue)", access: .retrieve) { request, context in
                try render(kind, vault, request, context)
            }
            group.get("\(instance)/\(kind.rawValue)", access: .retrieve) { request, context in try render(kind, vault, request, context) }
            group.get("studies/:study/series/:series/\(kind.rawValue)", access: .retrieve) { request, context in
                try render(kind, vault, request, context)
            }
            group.get("studies/:study/\(kind.rawValue)", access: .retrieve) { request, context in try render(kind, vault, request, context) }
        }
    }

    static let explicitVRLittleEndian = "1.2.840.10008.1.2.1"
    static let nativeSyntaxes: Set<String> = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"]
    /// Frames buffered before the response starts (their exact size goes into the audit record); beyond
    /// this the rest are read while the response is sent.
    static let prefetchLimit = 64 << 20
    static let maxFramesPerRequest = 10_000

    // MARK: Frames

    /// GET …/instances/{i}/frames/{list}: the frames, 1-based, in the order listed.
    static func frames(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        let (item, ids) = try instance(vault, context)
        let numbers = try frameList(context.parameters.get("frames") ?? "")
        let frames = try open(vault, item)
        let layout = frames.layout
        for n in numbers where n > layout.numberOfFrames {
            frames.close()
            throw APIError(.notFound, "frame \(n) does not exist: the instance has \(layout.numberOfFrames) frame(s)")
        }
        guard let answer = negotiateFrames(accept: acceptRanges(request), storedSyntax: layout.transferSyntaxUID, count: numbers.count) else {
            frames.close()
            throw APIError(.notAcceptable, notAcceptableMessage(layout.transferSyntaxUID))
        }
        // Read the frames in stream order while they fit the prefetch bound: one decryption pass, and the
        // first frame's errors become a status instead of a cut response.
        var stored: [Int: [UInt8]] = [:]
        var sizes: [Int: Int] = [:]
        var held = 0
        do {
            for n in Set(numbers).sorted() {
                let ranges = try frames.storedRanges(ofFrame: n - 1)
                let size = ranges.reduce(0) { $0 + $1.count }
                sizes[n] = answer.transcode ? layout.frameSize : size
                if held + size <= prefetchLimit || stored.isEmpty {
                    stored[n] = try frames.storedFrame(n - 1)
                    held += size
                }
            }
            if answer.transcode, let first = numbers.first, let bytes = stored[first] {
                _ = try DICOMPixels.decodeFrame(bytes, layout: layout)
            }
        } catch {
            frames.close()
            throw pixelError(error)
        }
        let total = numbers.reduce(Int64(0)) { $0 + Int64(sizes[$1] ?? 0) }
        context.recordDisclosure(studies: [ids.study], patients: [item.patientID], instances: 1, bytes: total)
        let partType = answer.partType(stored: layout.transferSyntaxUID)
        let prefetched = stored
        let produce: @Sendable (Int) throws -> [UInt8] = { n in
            let bytes = try prefetched[n] ?? frames.storedFrame(n - 1)
            return answer.transcode ? try DICOMPixels.decodeFrame(bytes, layout: layout).bytes : bytes
        }
        let channel = context.channel
        if !answer.multipart, let n = numbers.first {
            let body: [UInt8]
            do { body = try produce(n) } catch { throw pixelError(error) }
            frames.close()
            var headers = HTTPFields()
            headers[.contentType] = partType
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        let boundary = "medvault-" + UUID().uuidString
        var headers = HTTPFields()
        headers[.contentType] = "multipart/related; type=\"\(answer.mediaType)\"; boundary=\(boundary)"
        let base = requestPath(request)
        let body = ResponseBody { writer in
            defer { frames.close() }
            for (i, n) in numbers.enumerated() {
                guard channel.isActive else { throw CancellationError() }
                let bytes = try produce(n)
                let head = (i == 0 ? "" : "\r\n") + "--\(boundary)\r\nContent-Type: \(partType)\r\nContent-Length: \(bytes.count)\r\n"
                    + "Content-Location: \(base)\r\n\r\n"
                try await writer.write(ByteBuffer(string: head))
                try await writer.write(ByteBuffer(bytes: bytes))
            }
            try await writer.write(ByteBuffer(string: "\r\n--\(boundary)--\r\n"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    /// A comma-separated list of frame numbers, 1-based (`1,3,5`). Repeats are kept.
    static func frameList(_ text: String) throws -> [Int] {
        let decoded = text.removingPercentEncoding ?? text
        let items = decoded.split(separator: ",", omittingEmptySubsequences: false)
        guard !items.isEmpty, items.count <= maxFramesPerRequest else {
            throw APIError(.badRequest, "a frame list is 1 to \(maxFramesPerRequest) frame numbers separated by commas")
        }
        return try items.map { s in
            guard let n = Int(s.trimmingCharacters(in: .whitespaces)), n >= 1 else {
                throw APIError(.badRequest, "frame numbers are integers from 1, separated by commas")
            }
            return n
        }
    }

    /// How frames are sent: in one part or several, as stored or decoded to Explicit VR Little Endian.
    struct FrameAnswer: Equatable {
        var multipart: Bool
        /// The media type asked for (the multipart `type`).
        var mediaType: String
        var transcode: Bool

        func partType(stored: String) -> String {
            if mediaType == "application/octet-stream" {
                return "application/octet-stream; transfer-syntax=\(transcode ? WADOPixels.explicitVRLittleEndian : stored)"
            }
            return mediaType
        }
    }

    /// The single-frame media types of compressed syntaxes (PS3.18 Table 8.7.3-2).
    static func imageMediaType(_ syntax: String) -> String? {
        switch syntax {
        case "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70": "image/jpeg"
        case "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81": "image/jls"
        case "1.2.840.10008.1.2.5": "image/dicom-rle"
        case "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91": "image/jp2"
        case "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93": "image/jpx"
        case "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203": "image/jhc"
        default: nil
        }
    }

    /// The first acceptable answer among the client's media ranges (by q, then order); nil: 406.
    static func negotiateFrames(accept: [MediaRange], storedSyntax: String, count: Int) -> FrameAnswer? {
        let canDecode = nativeSyntaxes.contains(storedSyntax) || DICOMPixels.canDecode(transferSyntax: storedSyntax)
        for range in accept {
            let multipart = range.type == "multipart/related"
            let inner = multipart ? (range.params["type"] ?? "application/octet-stream") : range.type
            // A single-part answer holds one frame.
            if !multipart && count != 1 && inner != "*/*" { continue }
            let wantsMultipart = multipart || count != 1
            let syntax = range.params["transfer-syntax"]
            switch inner {
            case "*/*", "application/*":
                return FrameAnswer(
                    multipart: wantsMultipart, mediaType: "application/octet-stream",
                    transcode: canDecode && syntax != "*")
            case "application/octet-stream":
                switch syntax {
                case "*": return FrameAnswer(multipart: wantsMultipart, mediaType: inner, transcode: false)
                case nil, explicitVRLittleEndian?:
                    // PS3.18's default for frames in octet-stream is Explicit VR Little Endian.
                    if canDecode { return FrameAnswer(multipart: wantsMultipart, mediaType: inner, transcode: !isExplicitLE(storedSyntax)) }
                case let s? where s == storedSyntax:
                    return FrameAnswer(multipart: wantsMultipart, mediaType: inner, transcode: false)
                default: break
                }
            default:
                if let stored = imageMediaType(storedSyntax), inner == stored || (inner == "image/x-dicom-rle" && stored == "image/dicom-rle"),
                    syntax == nil || syntax == "*" || syntax == storedSyntax
                {
                    return FrameAnswer(multipart: wantsMultipart, mediaType: inner, transcode: false)
                }
            }
        }
        return nil
    }

    static func isExplicitLE(_ syntax: String) -> Bool { syntax == explicitVRLittleEndian }

    static func notAcceptableMessage(_ stored: String) -> String {
        let decodable = nativeSyntaxes.contains(stored) || DICOMPixels.canDecode(transferSyntax: stored)
        return "the frames are stored in transfer syntax \(stored); available: as stored (transfer-syntax=*"
            + (imageMediaType(stored).map { " or \($0)" } ?? "") + ")"
            + (decodable ? " or decoded to \(explicitVRLittleEndian)" : "; it cannot be decoded here")
    }

    // MARK: Bulk data

    /// GET …/instances/{i}/bulkdata/{path}: the value of a binary element. The top-level Pixel Data
    /// (7FE00010) is read from the stream here; any other path (`elementBulkData`) from the header.
    static func bulkData(_ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        let (item, ids) = try instance(vault, context)
        let text = context.parameters.getCatchAll().joined(separator: "/")
        guard let path = DICOMElementPath(text) else {
            throw APIError(.notFound, "no bulk data at that path: a path is a tag (8 hex digits), then item index (from 0) and tag pairs, as /metadata's BulkDataURIs give them")
        }
        guard path.isTopLevelPixelData else { return try elementBulkData(vault, item, ids, path, request, context) }
        return try pixelBulkData(vault, item, ids, request, context)
    }

    /// The top-level Pixel Data value. Native: its bytes as stored, with `Range`. Encapsulated: its
    /// frames as stored, one part each (one frame single-part, with `Range`).
    static func pixelBulkData(
        _ vault: Vault, _ item: RetrievableInstance, _ ids: (study: String, series: String, sop: String), _ request: Request, _ context: VaultRequestContext
    ) throws -> Response {
        let frames = try open(vault, item)
        let layout = frames.layout
        guard let single = negotiateBulk(accept: acceptRanges(request), storedSyntax: layout.transferSyntaxUID) else {
            frames.close()
            throw APIError(.notAcceptable, "bulk data is sent as application/octet-stream (single part) or multipart/related; type=\"application/octet-stream\"")
        }
        let value: (whole: Range<UInt64>?, frames: [[Range<UInt64>]])
        do { value = try bulkValue(frames) } catch {
            frames.close()
            throw pixelError(error)
        }
        let answer = BulkAnswer(
            source: .stream(frames), partType: "application/octet-stream; transfer-syntax=\(layout.transferSyntaxUID)", study: ids.study,
            patient: item.patientID, context: context)
        if single {
            guard let whole = value.whole else {
                frames.close()
                throw APIError(.notAcceptable, "this encapsulated Pixel Data holds several fragments: ask for multipart/related; type=\"application/octet-stream\"")
            }
            return try answer.singlePart(whole, range: request.headers[.range])
        }
        // Multipart: one part for a native value; one part per frame for encapsulated data.
        return answer.multipart(value.whole.map { [[$0]] } ?? value.frames)
    }

    /// Where the Pixel Data value is: one stream range (native, or a single encapsulated frame's one
    /// fragment) as `whole`; and for encapsulated data, each frame's fragments.
    static func bulkValue(_ frames: InstanceFrameReader) throws -> (whole: Range<UInt64>?, frames: [[Range<UInt64>]]) {
        let layout = frames.layout
        guard layout.isEncapsulated else {
            let length = layout.valueLength ?? UInt64(layout.frameSize * layout.numberOfFrames)
            return (layout.valueOffset..<(layout.valueOffset + length), [])
        }
        let frameRanges = try (0..<layout.numberOfFrames).map { try frames.storedRanges(ofFrame: $0) }
        return (frameRanges.count == 1 && frameRanges[0].count == 1 ? frameRanges[0][0] : nil, frameRanges)
    }

    /// A bulk data answer being made: where its bytes are (closed when the body is sent, or on a
    /// refusal), the parts' media type, and what the audit record names.
    struct BulkAnswer {
        let source: BulkSource
        let partType: String
        let study: String
        let patient: String
        let context: VaultRequestContext

        /// Single part: the value, or the byte range of it that `Range` asks for (206; 416 outside it).
        func singlePart(_ whole: Range<UInt64>, range rangeHeader: String?) throws -> Response {
            let total = UInt64(whole.count)
            var status = HTTPResponse.Status.ok
            var slice = whole
            var headers = HTTPFields()
            headers[.contentType] = partType
            headers[.acceptRanges] = "bytes"
            if let rangeHeader {
                switch byteRange(rangeHeader, total: total) {
                case .none: break
                case .unsatisfiable:
                    source.close()
                    throw RangeNotSatisfiable(total: total)
                case .range(let r):
                    status = .partialContent
                    slice = (whole.lowerBound + r.lowerBound)..<(whole.lowerBound + r.upperBound)
                    headers[.contentRange] = "bytes \(r.lowerBound)-\(r.upperBound - 1)/\(total)"
                }
            }
            context.recordDisclosure(studies: [study], patients: [patient], instances: 1, bytes: Int64(slice.count))
            let (source, channel, sent) = (source, context.channel, slice)
            let body = ResponseBody(contentLength: sent.count) { writer in
                defer { source.close() }
                try await source.send(sent, channel: channel, to: &writer)
                try await writer.finish(nil)
            }
            return Response(status: status, headers: headers, body: body)
        }

        /// multipart/related, one part per element of `parts` (each the stream ranges it joins).
        func multipart(_ parts: [[Range<UInt64>]]) -> Response {
            let boundary = "medvault-" + UUID().uuidString
            let partType = partType
            @Sendable func head(_ i: Int, _ length: Int) -> String {
                (i == 0 ? "" : "\r\n") + "--\(boundary)\r\nContent-Type: \(partType)\r\nContent-Length: \(length)\r\n\r\n"
            }
            let tail = "\r\n--\(boundary)--\r\n"
            let sizes = parts.map { $0.reduce(0) { $0 + $1.count } }
            let length = sizes.enumerated().reduce(tail.utf8.count) { $0 + head($1.offset, $1.element).utf8.count + $1.element }
            context.recordDisclosure(studies: [study], patients: [patient], instances: 1, bytes: Int64(sizes.reduce(0, +)))
            var headers = HTTPFields()
            headers[.contentType] = "multipart/related; type=\"application/octet-stream\"; boundary=\(boundary)"
            let (source, channel) = (source, context.channel)
            let body = ResponseBody(contentLength: length) { writer in
                defer { source.close() }
                for (i, ranges) in parts.enumerated() {
                    try await writer.write(ByteBuffer(string: head(i, sizes[i])))
                    for r in ranges { try await source.send(r, channel: channel, to: &writer) }
                }
                try await writer.write(ByteBuffer(string: tail))
                try await writer.finish(nil)
            }
            return Response(status: .ok, headers: headers, body: body)
        }
    }

    static let pixelDataTag = "7FE00010"

    /// Writes a stream range to the client in pieces, as they are decrypted.
    static func stream(_ frames: InstanceFrameReader, _ range: Range<UInt64>, channel: any Channel, to writer: inout any ResponseBodyWriter) async throws {
        var pieces: [[UInt8]] = []
        var at = range.lowerBound
        // Pieces of at most 1 MiB: the reader is synchronous, the writer async.
        while at < range.upperBound {
            guard channel.isActive else { throw CancellationError() }
            let end = min(range.upperBound, at + (1 << 20))
            pieces.removeAll(keepingCapacity: true)
            try frames.forEachPiece(of: at..<end) { pieces.append($0) }
            for p in pieces { try await writer.write(ByteBuffer(bytes: p)) }
            at = end
        }
    }

    /// True: single part; false: multipart; nil: 406.
    static func negotiateBulk(accept: [MediaRange], storedSyntax: String) -> Bool? {
        for range in accept {
            let multipart = range.type == "multipart/related"
            let inner = multipart ? (range.params["type"] ?? "application/octet-stream") : range.type
            let syntax = range.params["transfer-syntax"]
            guard syntax == nil || syntax == "*" || syntax == storedSyntax else { continue }
            switch inner {
            // PS3.18's default for bulk data is multipart.
            case "*/*", "application/*": return false
            case "application/octet-stream": return !multipart
            default: continue
            }
        }
        return nil
    }

    enum ByteRange: Equatable {
        /// No usable range (another unit, several ranges, a syntax error): the whole value, 200.
        case none
        case unsatisfiable
        case range(Range<UInt64>)
    }

    /// One `bytes=` range (RFC 9110 §14.1.2): `a-b`, `a-` or `-n`. Several ranges are answered whole.
    static func byteRange(_ header: String, total: UInt64) -> ByteRange {
        let h = header.trimmingCharacters(in: .whitespaces)
        guard h.lowercased().hasPrefix("bytes="), !h.contains(",") else { return .none }
        let spec = h.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard let dash = spec.firstIndex(of: "-") else { return .none }
        let first = spec[..<dash], last = spec[spec.index(after: dash)...]
        if first.isEmpty {
            guard let n = UInt64(last), n > 0 else { return last.isEmpty ? .none : .unsatisfiable }
            return total == 0 ? .unsatisfiable : .range((total - min(n, total))..<total)
        }
        guard let a = UInt64(first) else { return .none }
        guard a < total else { return .unsatisfiable }
        if last.isEmpty { return .range(a..<total) }
        guard let b = UInt64(last), b >= a else { return .none }
        return .range(a..<(min(b, total - 1) + 1))
    }

    /// 416 with the value's length (RFC 9110 §15.5.17).
    struct RangeNotSatisfiable: HTTPResponseError {
        let total: UInt64
        var status: HTTPResponse.Status { .rangeNotSatisfiable }
        func response(from request: Request, context: some RequestContext) throws -> Response {
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.contentRange] = "bytes */\(total)"
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: #"{"error":"the range is outside the value"}"#)))
        }
    }

    // MARK: Rendered and thumbnail

    enum RenderKind: String, CaseIterable {
        case rendered, thumbnail
    }

    /// GET …/rendered and …/thumbnail at study, series, instance and frame level: one frame as JPEG or
    /// PNG. Study and series level render the first instance (catalog order) that has pixel data,
    /// at most the first `representativeTries` are tried.
    static func render(_ kind: RenderKind, _ vault: Vault, _ request: Request, _ context: VaultRequestContext) throws -> Response {
        let options = try renderOptions(kind, request)
        let study = context.parameters.get("study") ?? ""
        var frameIndex = 0
        let frames: InstanceFrameReader
        let patient: String
        if context.parameters.get("instance") != nil {
            let (item, _) = try instance(vault, context)
            if let list = context.parameters.get("frames") {
                let numbers = try frameList(list)
                guard numbers.count == 1, let n = numbers.first else { throw APIError(.badRequest, "a rendered frame is one frame number") }
                frameIndex = n - 1
            }
            frames = try open(vault, item)
            patient = item.patientID
        } else {
            let items = try vault.instancesForRetrieval(study: study, series: context.parameters.get("series"))
            guard !items.isEmpty else { throw APIError(.notFound, context.parameters.get("series") == nil ? "no such study" : "no such series") }
            var found: (InstanceFrameReader, String)?
            for item in items.prefix(representativeTries) {
                if let f = try? vault.openFrames(item) {
                    found = (f, item.patientID)
                    break
                }
            }
            guard let found else { throw APIError(.notFound, "no instance with pixel data to render") }
            (frames, patient) = found
        }
        defer { frames.close() }
        guard frameIndex < frames.layout.numberOfFrames else {
            throw APIError(.notFound, "frame \(frameIndex + 1) does not exist: the instance has \(frames.layout.numberOfFrames) frame(s)")
        }
        let image: [UInt8]
        do {
            let frame = try frames.storedFrame(frameIndex)
            image = try DICOMPixels.render(header: frames.header, frame: frame, options: options)
        } catch {
            throw pixelError(error)
        }
        context.recordDisclosure(studies: [study], patients: [patient], instances: 1, bytes: Int64(image.count))
        var headers = HTTPFields()
        headers[.contentType] = options.format == .png ? "image/png" : "image/jpeg"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: image)))
    }

    static let representativeTries = 16
    static let thumbnailSize = 128

    /// `accept` (query, else the Accept header), `window=center,width[,function]`, `viewport=vw,vh`,
    /// `quality=1…100`. Other parameters (annotation, charset, iccprofile) are ignored.
    static func renderOptions(_ kind: RenderKind, _ request: Request) throws -> DICOMRenderOptions {
        let q = request.uri.queryParameters
        var options = kind == .thumbnail ? DICOMRenderOptions.thumbnail(size: thumbnailSize) : DICOMRenderOptions()
        let accept: [MediaRange] = q["accept"].map { MediaRange.parseList(String($0)) } ?? acceptRanges(request)
        var png: Bool?
        for r in accept {
            if r.type == "image/jpeg" || r.type == "*/*" || r.type == "image/*" { png = false; break }
            if r.type == "image/png" { png = true; break }
        }
        guard let png else { throw APIError(.notAcceptable, "rendered images are image/jpeg or image/png") }
        var quality = 90
        if let text = q["quality"] {
            guard let v = Int(text), (1...100).contains(v) else { throw APIError(.badRequest, "quality is an integer from 1 to 100") }
            quality = v
        } else if kind == .thumbnail {
            quality = 80
        }
        options.format = png ? .png : .jpeg(quality: quality)
        if let text = q["window"] {
            let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 || parts.count == 3, let c = Double(parts[0]), let w = Double(parts[1]), c.isFinite, w.isFinite, w >= 1
            else { throw APIError(.badRequest, "window is center,width,function with a width of at least 1") }
            let function: DICOMWindow.Function
            switch parts.count == 3 ? parts[2].lowercased() : "linear" {
            case "linear": function = .linear
            case "linear-exact", "linear_exact": function = .linearExact
            case "sigmoid": function = .sigmoid
            default: throw APIError(.badRequest, "the window function is linear, linear-exact or sigmoid")
            }
            options.window = DICOMWindow(center: c, width: w, function: function)
        }
        if let text = q["viewport"] {
            let parts = text.split(separator: ",", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw APIError(.badRequest, "viewport is vw,vh (cropping with sx,sy,sw,sh is not supported)") }
            guard let w = Int(parts[0]), let h = Int(parts[1]), (0...16384).contains(w), (0...16384).contains(h), w + h > 0 else {
                throw APIError(.badRequest, "viewport is two sizes from 0 to 16384, not both 0")
            }
            options.viewport = DICOMViewport(width: w, height: h)
        }
        return options
    }

    // MARK: Shared

    /// The instance at the path (404 unless it is in that study and series) and its UIDs.
    static func instance(_ vault: Vault, _ context: VaultRequestContext) throws -> (RetrievableInstance, (study: String, series: String, sop: String)) {
        let study = context.parameters.get("study") ?? "", series = context.parameters.get("series") ?? ""
        let sop = context.parameters.get("instance") ?? ""
        guard let item = try vault.instanceForRetrieval(study: study, series: series, instance: sop) else {
            throw APIError(.notFound, "no such instance")
        }
        return (item, (study, series, sop))
    }

    static func open(_ vault: Vault, _ item: RetrievableInstance) throws -> InstanceFrameReader {
        do { return try vault.openFrames(item) } catch { throw pixelError(error) }
    }

    /// A pixel-layer failure as a status: what the client asked for that cannot exist or be made is a
    /// 4xx; a stored file whose pixel data is damaged is a 500 that says so (messages hold offsets and
    /// tags, never values).
    static func pixelError(_ error: any Error) -> any Error {
        switch error {
        case let e as APIError: return e
        case DICOMError.noPixelData: return APIError(.notFound, "the instance has no pixel data")
        case DICOMError.frameOutOfRange(let requested, let available):
            return APIError(.notFound, "frame \(requested + 1) does not exist: the instance has \(available) frame(s)")
        case DICOMError.unsupportedTransferSyntax(let uid):
            return APIError(.notAcceptable, "frames in transfer syntax \(uid) cannot be decoded or rendered here")
        case DICOMError.unsupported(let reason): return APIError(.notAcceptable, "unsupported pixel data: \(reason)")
        case DICOMError.malformed(let reason): return APIError(.internalServerError, "the stored pixel data cannot be read: \(reason)")
        case let e as InstanceReadError: return APIError(.internalServerError, e.description)
        default: return error
        }
    }

    /// One `/metadata` object: the instance's attributes, with a BulkDataURI for its Pixel Data and
    /// for binary values longer than 1 KiB at any depth (`DICOMBulkDataOptions`; absolute when the
    /// request names its host, as PS3.18 §8.7.1.1 asks).
    static func metadataObject(_ vault: Vault, _ item: RetrievableInstance, _ request: Request) throws -> String {
        let base = request.head.authority.map { "http://\($0)" } ?? ""
        let prefix = item.sopInstanceUID.map { base + "/dicom-web/studies/\(item.studyUID)/series/\(item.seriesUID)/instances/\($0)/bulkdata/" }
        let meta = try vault.metadataWithPixelLayout(item, bulkData: prefix.map { DICOMBulkDataOptions(uriPrefix: $0) })
        var json = meta.json.trimmingCharacters(in: .whitespacesAndNewlines)
        // The shim's JSON never holds the top-level Pixel Data (it deletes it before writing); a
        // "7FE00010" key in it is an item's (an icon image), which must not stop this one.
        guard let layout = meta.pixelLayout, let prefix, json.hasSuffix("}") else { return json }
        let vr = layout.isEncapsulated || layout.bitsAllocated <= 8 ? "OB" : "OW"
        let uri = prefix + pixelDataTag
        var element = "\"\(pixelDataTag)\":{\"vr\":\"\(vr)\",\"BulkDataURI\":"
        DICOMJSONObject.appendString(uri, to: &element)
        element += "}"
        json.removeLast()
        let empty = json.trimmingCharacters(in: .whitespacesAndNewlines) == "{"
        return json + (empty ? "" : ",") + element + "}"
    }

    /// The request's Accept header as media ranges, best first; `*/*` when there is none.
    static func acceptRanges(_ request: Request) -> [MediaRange] {
        let values = request.headers[values: .accept]
        return values.isEmpty ? [MediaRange(type: "*/*", params: [:], q: 1)] : MediaRange.parseList(values.joined(separator: ","))
    }

    /// The path of this request (for Content-Location).
    static func requestPath(_ request: Request) -> String { request.uri.path }
}

/// One media range of an Accept header: type/subtype lowercased, parameters (names lowercased, values
/// unquoted), and its q value.
struct MediaRange: Equatable {
    var type: String
    var params: [String: String]
    var q: Double

    /// Parses `a/b; p=v; q=0.5, c/d; type="x/y"` (commas and semicolons inside quotes kept), sorted by
    /// q, highest first, in their order otherwise; q=0 ranges are dropped.
    static func parseList(_ text: String) -> [MediaRange] {
        var items: [[String]] = [[]]
        var current = ""
        var quoted = false
        for ch in text {
            switch ch {
            case "\"": quoted.toggle()
            case "," where !quoted:
                items[items.count - 1].append(current)
                items.append([])
                current = ""
            case ";" where !quoted:
                items[items.count - 1].append(current)
                current = ""
            default: current.append(ch)
            }
        }
        items[items.count - 1].append(current)
        var out: [MediaRange] = []
        for fields in items {
            let trimmed = fields.map { $0.trimmingCharacters(in: .whitespaces) }
            guard let type = trimmed.first, !type.isEmpty else { continue }
            var range = MediaRange(type: type.lowercased(), params: [:], q: 1)
            for p in trimmed.dropFirst() {
                guard let eq = p.firstIndex(of: "=") else { continue }
                let name = p[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
                let value = p[p.index(after: eq)...].trimmingCharacters(in: .whitespaces)
                if name == "q" { range.q = Double(value) ?? 1 } else { range.params[name] = name == "type" ? value.lowercased() : value }
            }
            if range.q > 0 { out.append(range) }
        }
        return out.enumerated().sorted { ($0.element.q, -$0.offset) > ($1.element.q, -$1.offset) }.map(\.element)
    }
}
