// Parts of one instance's clear bytes for the frames, rendered and bulk data routes, and frame access
// on top of them. A format-2 blob is read by range: a frame costs its own chunks (and the header's).
// A format-1 blob is one secretstream, so byte N costs decrypting every byte before it: it is read by a
// forward-only reader over the decrypting stream that stops once the caller has what it needs, so
// frame k of a native file costs the file up to the end of frame k, never the rest.
public import VaultDICOM
import Foundation
import VaultCrypto
import VaultFormats
import VaultKeys

/// Where an `InstanceFrameReader`'s clear bytes come from: a forward reader (format 1) or reads by
/// range (format 2).
private protocol ClearBytes: AnyObject {
    /// The lowest offset still readable (0 for reads by range).
    var retainedFrom: UInt64 { get }
    func release(before offset: UInt64)
    func read(_ offset: UInt64, _ count: Int) throws -> [UInt8]
    func forEachPiece(from offset: UInt64, count: UInt64, _ body: ([UInt8]) throws -> Void) throws
    var bytesDecrypted: UInt64 { get }
    var chunksDecrypted: Int { get }
    func close()
}

/// A format-2 blob read by range: nothing is ever behind, nothing needs releasing.
private final class RangeClearBytes: ClearBytes {
    private var blob: SeekableBlob?
    /// The counts of a closed reader.
    private var closedCounts: (bytes: UInt64, chunks: Int) = (0, 0)

    init(_ blob: SeekableBlob) { self.blob = blob }

    var retainedFrom: UInt64 { 0 }
    func release(before offset: UInt64) {}
    var bytesDecrypted: UInt64 { blob.map { UInt64($0.bytesDecrypted) } ?? closedCounts.bytes }
    var chunksDecrypted: Int { blob?.chunksDecrypted ?? closedCounts.chunks }

    private func open() throws -> SeekableBlob {
        guard let blob else { throw InstanceReadError.truncated(offset: 0) }
        return blob
    }

    func read(_ offset: UInt64, _ count: Int) throws -> [UInt8] {
        guard offset <= UInt64(Int64.max) else { return [] }
        return try open().read(Int64(offset), count)
    }

    func forEachPiece(from offset: UInt64, count: UInt64, _ body: ([UInt8]) throws -> Void) throws {
        let blob = try open()
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= UInt64(blob.plainSize) else {
            throw InstanceReadError.truncated(offset: min(offset, UInt64(blob.plainSize)))
        }
        try blob.forEachPiece(Int64(offset)..<Int64(end)) { piece in
            var bytes = Array(piece)
            defer { wipe(&bytes) }
            try body(bytes)
        }
    }

    /// Drops the blob (its clear chunk is wiped as it goes).
    func close() {
        closedCounts = (bytesDecrypted, chunksDecrypted)
        blob = nil
    }
}

/// Why a part of an instance could not be read.
public enum InstanceReadError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A frame or value larger than the caller's bound (nothing was allocated for it).
    case tooLarge(what: String, limit: Int)
    /// The stream ended before the requested bytes (the file's own lengths say more than it holds).
    case truncated(offset: UInt64)

    public var description: String {
        switch self {
        case .tooLarge(let what, let limit): "\(what) is larger than \(limit) bytes; refused"
        case .truncated(let offset): "the instance ends at offset \(offset), before the bytes its header describes"
        }
    }
}

/// Chunks handed from the decrypting thread to the reader: at most `window` wait, so the decryptor runs
/// a few chunks ahead and no further. Shared by the thread and the reader (never the reader itself, so
/// a reader dropped without `close` still stops the thread in its deinit).
private final class ChunkQueue: @unchecked Sendable {
    static let window = 4
    let condition = NSCondition()
    var chunks: [[UInt8]] = []
    var finished = false
    var failure: (any Error)?
    var closed = false
    /// Clear bytes decrypted so far (handed over or waiting).
    var produced: UInt64 = 0
    var producedChunks = 0

    struct Closed: Error {}

    func push(_ chunk: UnsafeRawBufferPointer) throws {
        condition.lock()
        defer { condition.unlock() }
        while chunks.count >= Self.window && !closed { condition.wait() }
        if closed { throw Closed() }
        chunks.append(Array(chunk))
        produced += UInt64(chunk.count)
        producedChunks += 1
        condition.broadcast()
    }

    func finish(_ error: (any Error)?) {
        condition.lock()
        if !(error is Closed) { failure = error }
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// The next chunk, nil at the end of the stream.
    func pull() throws -> [UInt8]? {
        condition.lock()
        defer { condition.unlock() }
        while chunks.isEmpty && !finished { condition.wait() }
        if !chunks.isEmpty {
            condition.broadcast()
            return chunks.removeFirst()
        }
        if let failure { throw failure }
        return nil
    }

    func close() {
        condition.lock()
        closed = true
        for i in chunks.indices { wipe(&chunks[i]) }
        chunks = []
        condition.broadcast()
        condition.unlock()
    }

    var bytesProduced: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return produced
    }

    var chunksProduced: Int {
        condition.lock()
        defer { condition.unlock() }
        return producedChunks
    }
}

/// An instance's clear bytes in stream order, decrypted on a thread of their own as they are asked
/// for. Bytes at and after the release point (`release(before:)`) stay available; earlier ones are
/// wiped and dropped. Not thread-safe: one consumer.
public final class InstanceStreamReader: @unchecked Sendable {
    private let queue = ChunkQueue()
    /// Retained clear bytes are `buffer[head...]`, and `buffer[head]` is stream offset `bufferStart`.
    /// Dropped bytes are zeroed at once and compacted away only now and then, so that skipping through
    /// a large file costs one copy per chunk, not one per retained byte.
    private var buffer: [UInt8] = []
    private var head = 0
    private var bufferStart: UInt64 = 0
    private var released: UInt64 = 0
    private var ended = false
    /// Retained bytes below the current read beyond this are dropped even if not released.
    let retainLimit: Int

    init(vault: Vault, item: RetrievableInstance, retainLimit: Int = 64 << 20) {
        self.retainLimit = retainLimit
        let queue = self.queue
        Thread {
            do {
                try vault.stream(item) { try queue.push($0) }
                queue.finish(nil)
            } catch {
                queue.finish(error)
            }
        }.start()
    }

    deinit {
        queue.close()
        wipe(&buffer)
    }

    /// Stops the decryption (the thread ends at its next chunk) and wipes what is held.
    public func close() {
        queue.close()
        wipe(&buffer)
        buffer = []
        head = 0
    }

    /// Clear bytes decrypted so far, including the few chunks decrypted ahead.
    public var bytesDecrypted: UInt64 { queue.bytesProduced }

    /// The lowest offset still readable.
    public var retainedFrom: UInt64 { bufferStart }

    private var retained: Int { buffer.count - head }
    private var bufferEnd: UInt64 { bufferStart + UInt64(retained) }

    /// Allows the bytes before `offset` to be dropped.
    public func release(before offset: UInt64) {
        released = max(released, offset)
        drop(before: min(released, bufferEnd))
    }

    private func drop(before offset: UInt64) {
        guard offset > bufferStart else { return }
        let n = Int(min(offset - bufferStart, UInt64(retained)))
        buffer.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            (base + head).initializeMemory(as: UInt8.self, repeating: 0, count: n)
        }
        head += n
        bufferStart += UInt64(n)
        if head == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1 << 20 && head >= buffer.count / 2 {
            buffer.removeFirst(head)  // already zeroed
            head = 0
        }
    }

    /// Pulls chunks until `end` is buffered or the stream ends; bytes below `keepFrom` that pass the
    /// retain limit (or the release point) go as they come.
    private func fill(to end: UInt64, keepFrom: UInt64) throws {
        while bufferEnd < end, !ended {
            guard var chunk = try queue.pull() else {
                ended = true
                break
            }
            buffer += chunk
            wipe(&chunk)
            let floor = min(keepFrom, bufferEnd)
            if released > bufferStart { drop(before: min(released, floor)) }
            if retained > retainLimit, floor > bufferStart {
                drop(before: min(floor, bufferStart + UInt64(retained - retainLimit)))
            }
        }
    }

    /// `count` bytes from `offset` (fewer only where the stream ends). Throws `Backwards` when
    /// `offset` is before `retainedFrom`.
    public func read(_ offset: UInt64, _ count: Int) throws -> [UInt8] {
        guard offset >= bufferStart else { throw Backwards() }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow else { throw InstanceReadError.truncated(offset: offset) }
        try fill(to: end, keepFrom: offset)
        guard offset < bufferEnd else { return [] }
        let from = head + Int(offset - bufferStart), to = head + Int(min(end, bufferEnd) - bufferStart)
        return Array(buffer[from..<to])
    }

    /// Hands the bytes `offset ..< offset + count` to `body` in pieces of at most 64 KiB, keeping none
    /// of them: for values of any size. Throws `.truncated` if the stream ends first.
    public func forEachPiece(from offset: UInt64, count: UInt64, _ body: ([UInt8]) throws -> Void) throws {
        guard offset >= bufferStart else { throw Backwards() }
        var at = offset
        let end = offset + count
        while at < end {
            release(before: at)
            let piece = try read(at, Int(min(64 << 10, end - at)))
            guard !piece.isEmpty else { throw InstanceReadError.truncated(offset: at) }
            try body(piece)
            at += UInt64(piece.count)
        }
        release(before: end)
    }

    /// A read before what the reader still holds; the caller starts a new reader.
    public struct Backwards: Error {}
}

extension InstanceStreamReader: ClearBytes {
    fileprivate var chunksDecrypted: Int { queue.chunksProduced }
}

/// One instance opened for pixel access: its header (the stream through the Pixel Data element's
/// header), the pixel layout, and a reader of the rest. A format-2 blob is read by range: a frame
/// costs the chunks it lies in. A format-1 blob is read forward: frames asked for in increasing order
/// cost one decryption pass that stops after the last of them; an earlier frame starts a new pass from
/// the beginning.
public final class InstanceFrameReader: @unchecked Sendable {
    /// The stream's start up to the Pixel Data value (what `DICOMPixels.render` needs besides a frame).
    public let header: [UInt8]
    public let layout: DICOMPixelLayout
    private let vault: Vault
    private let item: RetrievableInstance
    private var reader: any ClearBytes
    /// Bytes and chunks decrypted by readers already closed (restarts).
    private var earlierPasses: UInt64 = 0
    private var earlierChunks = 0
    /// The blob is format 2, read by range (no passes: any frame costs its own chunks).
    public let readsByRange: Bool
    public private(set) var passes = 1
    /// The Basic Offset Table item (header and entries), read once: every frame's lookup uses it.
    private var offsetTable: (start: UInt64, bytes: [UInt8])?

    /// The header prefixes tried, as for `/metadata`: most headers fit the first.
    static let headerLimits = [64 << 10, 1 << 20, 16 << 20]

    /// Reads the header and the layout. Throws `DICOMError.noPixelData` for an instance without pixels.
    public init(vault: Vault, item: RetrievableInstance) throws {
        self.vault = vault
        self.item = item
        if let blob = try vault.openRanges(item.resolved) {
            reader = RangeClearBytes(blob)
            readsByRange = true
        } else {
            reader = InstanceStreamReader(vault: vault, item: item)
            readsByRange = false
        }
        var found: (DICOMPixelLayout, [UInt8])?
        var lastError: any Error = DICOMError.noPixelData("no Pixel Data in the first 16 MiB")
        for limit in Self.headerLimits {
            var prefix = try reader.read(0, limit)
            defer { wipe(&prefix) }
            do {
                let l = try DICOMPixelLayout.read(prefix)
                found = (l, Array(prefix.prefix(Int(min(l.valueOffset, UInt64(prefix.count))))))
                break
            } catch {
                lastError = error
                if prefix.count < limit { break }
            }
        }
        guard let (layout, header) = found else {
            reader.close()
            throw lastError
        }
        self.layout = layout
        self.header = header
        reader.release(before: layout.valueOffset)
        if layout.isEncapsulated {
            let head = try reader.read(layout.valueOffset, 8)
            let isItem = head.count == 8 && head[0] == 0xFE && head[1] == 0xFF && head[2] == 0x00 && head[3] == 0xE0
            let length = head.count == 8 ? UInt64(head[4]) | UInt64(head[5]) << 8 | UInt64(head[6]) << 16 | UInt64(head[7]) << 24 : 0
            // A table of 4 bytes a frame; anything larger is left to fragmentRanges to refuse.
            if isItem, length <= 4 * UInt64(max(1, layout.numberOfFrames)) {
                offsetTable = (layout.valueOffset, try reader.read(layout.valueOffset, 8 + Int(length)))
            }
        }
    }

    deinit { reader.close() }

    public func close() { reader.close() }

    /// Clear bytes decrypted so far, over every pass.
    public var bytesDecrypted: UInt64 { earlierPasses + reader.bytesDecrypted }
    /// Chunks (64 KiB) decrypted so far, over every pass.
    public var chunksDecrypted: Int { earlierChunks + reader.chunksDecrypted }

    /// Reads from `offset`, starting a new pass when the bytes are behind the current one.
    private func read(_ offset: UInt64, _ count: Int) throws -> [UInt8] {
        if offset < reader.retainedFrom {
            earlierPasses += reader.bytesDecrypted
            earlierChunks += reader.chunksDecrypted
            reader.close()
            reader = InstanceStreamReader(vault: vault, item: item)
            passes += 1
            reader.release(before: offset)
        }
        return try reader.read(offset, count)
    }

    /// The stream ranges of frame `index` (0-based) as stored: one range for native data, its
    /// fragments' values for encapsulated data (found by reading item headers only).
    public func storedRanges(ofFrame index: Int) throws -> [Range<UInt64>] {
        if !layout.isEncapsulated {
            let r = try layout.nativeFrameRange(index)
            if let length = layout.valueLength, r.upperBound > layout.valueOffset + length {
                throw DICOMError.malformed("native pixel data is shorter than frame \(index)")
            }
            return [r]
        }
        // Without an offset table, JPEG frames are told apart by the SOI marker at each fragment's
        // start, asked for after every item header has been read: keep those two bytes as the walk
        // passes them, so the check never has to go back in the stream.
        var peeks: [UInt64: [UInt8]] = [:]
        let peek = layout.numberOfFrames > 1 && layout.transferSyntaxUID.hasPrefix("1.2.840.10008.1.2.4.")
        var first = true
        return try layout.fragmentRanges(ofFrame: index) { at, n in
            if let t = offsetTable, at >= t.start, at + UInt64(n) <= t.start + UInt64(t.bytes.count) {
                let from = Int(at - t.start)
                return Array(t.bytes[from..<(from + n)])
            }
            if let p = peeks[at], n <= p.count { return Array(p.prefix(n)) }
            // The walk's first item header is the lowest offset this frame needs.
            if first {
                first = false
                if at >= reader.retainedFrom { reader.release(before: at) }
            }
            let b = try read(at, peek && n == 8 ? 10 : n)
            if peek && n == 8 && b.count == 10 { peeks[at + 8] = Array(b[8..<10]) }
            return Array(b.prefix(n))
        }
    }

    /// Frame `index` (0-based) as stored: native bytes, or its fragments joined. Frames larger than
    /// `maxBytes` are refused before they are read.
    public func storedFrame(_ index: Int, maxBytes: Int = DICOMPixels.defaultMaxFrameBytes) throws -> [UInt8] {
        let ranges = try storedRanges(ofFrame: index)
        // Nothing before this frame is needed any more: skipping to it keeps no bytes.
        if let first = ranges.first, first.lowerBound >= reader.retainedFrom { reader.release(before: first.lowerBound) }
        let total = ranges.reduce(UInt64(0)) { $0 + UInt64($1.count) }
        guard total <= UInt64(max(0, maxBytes)) else { throw InstanceReadError.tooLarge(what: "frame \(index + 1)", limit: maxBytes) }
        var out: [UInt8] = []
        out.reserveCapacity(Int(total))
        for r in ranges {
            var part = try read(r.lowerBound, Int(r.count))
            defer { wipe(&part) }
            guard part.count == Int(r.count) else { throw InstanceReadError.truncated(offset: r.lowerBound + UInt64(part.count)) }
            out += part
            reader.release(before: r.upperBound)
        }
        return out
    }

    /// Hands the bytes `range` of the stream to `body` in pieces (a bulk data value of any size).
    public func forEachPiece(of range: Range<UInt64>, _ body: ([UInt8]) throws -> Void) throws {
        if range.lowerBound < reader.retainedFrom { _ = try read(range.lowerBound, 0) }
        try reader.forEachPiece(from: range.lowerBound, count: UInt64(range.count), body)
    }
}

/// An instance's attributes as DICOM JSON and where its Pixel Data is, from one read of its start.
public struct InstanceMetadata: Sendable {
    public let json: String
    /// nil when the instance has no top-level Pixel Data (or it lies beyond the header limit).
    public let pixelLayout: DICOMPixelLayout?
}

extension Vault {
    /// Opens an instance for frame, rendered and bulk data access (`InstanceFrameReader`).
    public func openFrames(_ item: RetrievableInstance) throws -> InstanceFrameReader {
        try InstanceFrameReader(vault: self, item: item)
    }

    /// `metadataJSON` and the Pixel Data layout from the same decrypted prefix (at most 16 MiB). With
    /// `bulkData`, binary values above its threshold are BulkDataURIs (`binaryValue` serves them).
    public func metadataWithPixelLayout(_ item: RetrievableInstance, bulkData: DICOMBulkDataOptions? = nil) throws -> InstanceMetadata {
        for limit in Self.headerPrefixLimits {
            // Only a prefix that reaches the Pixel Data, or holds the whole file, has every attribute: one
            // that ends between two elements before it parses too, without the attributes after the cut.
            let metadata: InstanceMetadata? = try withDecryptedPrefix(item, limit: limit) { prefix in
                let layout = try? DICOMPixelLayout.read(prefix)
                guard layout != nil || prefix.count < limit || DICOMPixelLayout.reachesPixelData(prefix), let json = try? DICOMParser.json(bytes: prefix, bulkData: bulkData) else { return nil }
                return InstanceMetadata(json: json, pixelLayout: layout)
            }
            if let metadata { return metadata }
        }
        throw VaultError.notFound("the instance's attributes could not be read")
    }

    /// The binary value at `path` (a BulkDataURI's path from `/metadata`), little endian, from the
    /// same decrypted prefix as `/metadata` (the value lies before the Pixel Data, so within 16 MiB).
    /// `body` sees the clear value, which is wiped when it returns. Throws `DICOMError.noSuchElement`
    /// when the dataset, read up to its Pixel Data or its end, has no binary value there.
    public func withBinaryValue<R>(_ item: RetrievableInstance, at path: DICOMElementPath, _ body: (DICOMBinaryValue) throws -> R) throws -> R {
        var lastError: any Error = DICOMError.noSuchElement("no element \(path) before the Pixel Data")
        for limit in Self.headerPrefixLimits {
            var found: DICOMBinaryValue?
            let settled: Bool = try withDecryptedPrefix(item, limit: limit) { prefix in
                do {
                    found = try DICOMParser.binaryValue(bytes: prefix, at: path, maxBytes: limit)
                    return true
                } catch {
                    lastError = error
                    // A prefix cut inside the header is read again, longer; a whole header (the file's
                    // end, or its Pixel Data, within the prefix) is the answer.
                    return prefix.count < limit || (try? DICOMPixelLayout.read(prefix)) != nil
                }
            }
            if var value = found?.bytes, let vr = found?.vr {
                found = nil
                defer { wipe(&value) }
                return try body(DICOMBinaryValue(vr: vr, bytes: value))
            }
            if settled { break }
        }
        throw lastError
    }
}

extension RetrievableInstance {
    public var studyUID: String { resolved.studyUID }
    public var seriesUID: String { resolved.seriesUID }
    /// nil when the instance was found without opening its record (`instancesForRetrieval`).
    public var sopInstanceUID: String? { resolved.sopInstanceUID }
}

