// Blob format 2 (docs/file-format.md §5a): the clear header of format 1 plus a random nonce prefix,
// then 64 KiB chunks each sealed on its own with XChaCha20-Poly1305 under the blob's file key.
// Chunk i's nonce is the prefix ‖ i, its associated data the header ‖ i ‖ final flag, so any chunk
// can be read and authenticated alone (a frame costs its own chunks), while reordering, truncation
// and appended bytes are still detected as with format 1's secretstream.
import VaultIO
package import VaultCrypto

extension BlobFormat {
    /// Format 2's layout (docs/file-format.md §5a).
    package enum V2 {
        package static let noncePrefixLength = 16
        /// Bytes 0–115: prefix ‖ wrapped FK ‖ nonce prefix; all of it is in every chunk's AD.
        package static var headerLength: Int { prefixLength + wrappedKeyLength + noncePrefixLength }  // 116
        package static var noncePrefixOffset: Int { prefixLength + wrappedKeyLength }  // 100
        package static var tagLength: Int { NoncedAEAD.tagByteCount }  // 16
        package static var sealedChunkSize: Int { chunkSize + tagLength }  // 65,552

        /// Where chunk `index` (0-based) starts in the blob.
        package static func chunkOffset(_ index: Int64) -> Int64 { Int64(headerLength) + index * Int64(sealedChunkSize) }

        /// The chunk count, clear size and sealed size of the last chunk of a blob of `blobSize` bytes;
        /// nil for a size no writer makes (no room for a final chunk's tag).
        package static func shape(blobSize: Int64) -> (chunks: Int64, plainSize: Int64, lastSealed: Int)? {
            let body = blobSize - Int64(headerLength)
            guard body >= Int64(tagLength) else { return nil }
            let sealed = Int64(sealedChunkSize)
            let chunks = (body + sealed - 1) / sealed
            let last = body - (chunks - 1) * sealed
            guard last >= Int64(tagLength) else { return nil }
            return (chunks, body - chunks * Int64(tagLength), Int(last))
        }
    }
}

/// The nonce and the associated data of one chunk, rebuilt in place for each index:
/// nonce = nonce prefix (16) ‖ u64 BE index; AD = header (116) ‖ u64 BE index ‖ final flag (1 byte).
struct ChunkContext {
    private(set) var nonce: [UInt8]
    private(set) var associatedData: [UInt8]
    private let headerLength: Int

    init(header: [UInt8]) {
        precondition(header.count == BlobFormat.V2.headerLength)
        headerLength = header.count
        let prefix = header[BlobFormat.V2.noncePrefixOffset..<BlobFormat.V2.headerLength]
        nonce = Array(prefix) + [UInt8](repeating: 0, count: NoncedAEAD.nonceByteCount - prefix.count)
        associatedData = header + [UInt8](repeating: 0, count: 9)
    }

    mutating func set(index: Int64, final isFinal: Bool) {
        let start = BlobFormat.V2.noncePrefixLength
        for i in 0..<8 {
            let byte = UInt8(truncatingIfNeeded: UInt64(index) >> (56 - 8 * i))
            nonce[start + i] = byte
            associatedData[headerLength + i] = byte
        }
        associatedData[headerLength + 8] = isFinal ? 1 : 0
    }

    /// Seals one chunk; returns the bytes written (`clear.count + 16`).
    mutating func seal(
        _ clear: UnsafeRawBufferPointer, index: Int64, final isFinal: Bool, key: SymmetricKey, into out: UnsafeMutableRawBufferPointer
    ) -> Int {
        set(index: index, final: isFinal)
        return nonce.withUnsafeBytes { n in
            associatedData.withUnsafeBytes { ad in NoncedAEAD.seal(clear, nonce: n, key: key, associatedData: ad, into: out) }
        }
    }

    /// Opens chunk `index` claimed to be (or not to be) the last. Failures say what the chunk is:
    /// one that opens with the other flag was cut off (`truncated`: a non-final chunk ends the data) or
    /// followed by bytes (`trailingData`: the final chunk is not last); anything else is `tampered`.
    mutating func open(
        _ sealed: UnsafeRawBufferPointer, index: Int64, final isFinal: Bool, key: SymmetricKey, into out: UnsafeMutableRawBufferPointer
    ) throws(BlobError) -> Int {
        if let n = try? attempt(sealed, index: index, final: isFinal, key: key, into: out) { return n }
        // Only a full chunk can be a non-final one.
        if !isFinal || sealed.count == BlobFormat.V2.sealedChunkSize,
            (try? attempt(sealed, index: index, final: !isFinal, key: key, into: out)) != nil
        {
            out.initializeMemory(as: UInt8.self, repeating: 0)
            throw isFinal ? .truncated : .trailingData
        }
        throw .tampered
    }

    private mutating func attempt(
        _ sealed: UnsafeRawBufferPointer, index: Int64, final isFinal: Bool, key: SymmetricKey, into out: UnsafeMutableRawBufferPointer
    ) throws -> Int {
        set(index: index, final: isFinal)
        return try nonce.withUnsafeBytes { n in
            try associatedData.withUnsafeBytes { ad in
                try NoncedAEAD.open(sealed, nonce: n, key: key, associatedData: ad, into: out)
            }
        }
    }
}

/// Format 2's chunk loops: sealing a whole file and opening a whole blob, in fixed buffers.
enum SeekableCodec {
    /// Encrypts everything readable from `source` under `fileKey`: `emit` receives the sealed chunks
    /// (batched up to 16 per call), `plain` sees each clear chunk before it is sealed. Clear buffers
    /// are wiped before release. Returns the number of clear bytes.
    static func seal(
        from source: any FileIO.SequentialSource, fileKey: SymmetricKey, header: [UInt8],
        plain: (UnsafeRawBufferPointer) -> Void, emit: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> Int64 {
        var context = ChunkContext(header: header)
        return try StreamCodec.sealChunks(
            from: source, chunkSize: BlobFormat.chunkSize, sealedChunkSize: BlobFormat.V2.sealedChunkSize, plain: plain, emit: emit
        ) { clear, index, isFinal, out in
            context.seal(clear, index: index, final: isFinal, key: fileKey, into: out)
        }
    }

    /// Opens the chunks that follow the header in `input` (positioned just after it), in order,
    /// handing each clear chunk to `sink` once it has authenticated. The last chunk is the one the
    /// data ends with (read-ahead), and must carry the final flag. Errors thrown by `sink` pass
    /// through unchanged. Returns (clear bytes, ciphertext bytes read).
    static func open(
        from input: any BlobReading, fileKey: SymmetricKey, header: [UInt8], sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> (plain: Int64, cipher: Int64) {
        let sealedChunk = BlobFormat.V2.sealedChunkSize
        var context = ChunkContext(header: header)
        let bufA = UnsafeMutableRawBufferPointer.allocate(byteCount: sealedChunk, alignment: 64)
        let bufB = UnsafeMutableRawBufferPointer.allocate(byteCount: sealedChunk, alignment: 64)
        let pbuf = UnsafeMutableRawBufferPointer.allocate(byteCount: BlobFormat.chunkSize, alignment: 64)
        defer {
            pbuf.initializeMemory(as: UInt8.self, repeating: 0)
            bufA.deallocate(); bufB.deallocate(); pbuf.deallocate()
        }
        func read(_ b: UnsafeMutableRawBufferPointer) throws(BlobError) -> Int {
            do { return try input.readFully(into: b) } catch { throw .io(error) }
        }
        var current = bufA, next = bufB
        var plain: Int64 = 0, cipher: Int64 = 0
        var index: Int64 = 0
        var currentCount = try read(current)
        if currentCount == 0 { throw BlobError.truncated }
        while true {
            var isLast = currentCount < sealedChunk
            var nextCount = 0
            if !isLast {
                nextCount = try read(next)
                isLast = nextCount == 0
            }
            cipher += Int64(currentCount)
            let n = try context.open(
                UnsafeRawBufferPointer(rebasing: current[0..<currentCount]), index: index, final: isLast, key: fileKey, into: pbuf)
            try sink(UnsafeRawBufferPointer(rebasing: pbuf[0..<n]))
            plain += Int64(n)
            if isLast { break }
            swap(&current, &next)
            currentCount = nextCount
            index += 1
        }
        return (plain, cipher)
    }
}

/// A format-2 blob opened for reading by range: each read decrypts and authenticates only the
/// chunks it covers (the chunk count comes from the blob's size, which the catalog recorded), and
/// keeps the last chunk it decrypted for the next read. Clear bytes are wiped when replaced and on
/// release. Not thread-safe: one consumer.
package final class SeekableBlob {
    /// The clear file's size.
    package let plainSize: Int64
    package let chunkCount: Int64
    /// Chunks decrypted so far (a chunk read twice in a row is decrypted once).
    package private(set) var chunksDecrypted = 0
    /// Clear bytes of the chunks decrypted so far.
    package private(set) var bytesDecrypted: Int64 = 0
    private let input: any BlobReading
    private let fileKey: SymmetricKey
    private var context: ChunkContext
    private let lastSealed: Int
    private let sealed: UnsafeMutableRawBufferPointer
    private let clear: UnsafeMutableRawBufferPointer
    private var cached: (index: Int64, count: Int)?

    /// Opens a blob for range reads: checks the header (magic, version, id, the file key) and the
    /// blob's size against `expectedSize` (the catalog's `blobSize`; the file's own size if nil).
    /// Returns nil for a format-1 blob, which can only be read from its start (`BlobCodec.decrypt`).
    /// `input` is freshly opened: the header is read from its sequential position (the start), the
    /// chunks by position.
    package static func open(
        _ input: any BlobReading, id: BlobID, patientKey: SymmetricKey, expectedSize: Int64? = nil
    ) throws(BlobError) -> SeekableBlob? {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 10, alignment: 1)
        defer { b.deallocate() }
        let got: Int
        do { got = try input.readFully(at: 0, into: b) } catch { throw .io(error) }
        let start = Array(b[0..<got])
        if got == 10, Array(start[0..<8]) == BlobFormat.magic, UInt16(start[8]) << 8 | UInt16(start[9]) == BlobFormat.streamVersion {
            return nil
        }
        let header = try BlobCodec.readHeader(from: input, id: id, patientKey: patientKey)
        guard header.version == BlobFormat.seekableVersion else { return nil }
        let actual: Int64
        do { actual = try input.size() } catch { throw .io(error) }
        let size = expectedSize ?? actual
        if actual < size { throw .truncated }
        if actual > size { throw .trailingData }
        guard let shape = BlobFormat.V2.shape(blobSize: size) else {
            throw size < Int64(BlobFormat.V2.headerLength + BlobFormat.V2.tagLength) ? .truncated : .tampered
        }
        return SeekableBlob(input: input, fileKey: header.fileKey, header: header.authenticated, shape: shape)
    }

    private init(input: any BlobReading, fileKey: SymmetricKey, header: [UInt8], shape: (chunks: Int64, plainSize: Int64, lastSealed: Int)) {
        self.input = input
        self.fileKey = fileKey
        context = ChunkContext(header: header)
        chunkCount = shape.chunks
        plainSize = shape.plainSize
        lastSealed = shape.lastSealed
        sealed = .allocate(byteCount: BlobFormat.V2.sealedChunkSize, alignment: 64)
        clear = .allocate(byteCount: BlobFormat.chunkSize, alignment: 64)
    }

    deinit {
        clear.initializeMemory(as: UInt8.self, repeating: 0)
        clear.deallocate()
        sealed.deallocate()
    }

    /// Decrypts chunk `index` into `clear` (unless it is there already); returns its clear length.
    private func load(_ index: Int64) throws(BlobError) -> Int {
        if let c = cached, c.index == index { return c.count }
        cached = nil
        let isLast = index == chunkCount - 1
        let n = isLast ? lastSealed : BlobFormat.V2.sealedChunkSize
        let box = UnsafeMutableRawBufferPointer(rebasing: sealed[0..<n])
        let got: Int
        do { got = try input.readFully(at: BlobFormat.V2.chunkOffset(index), into: box) } catch { throw .io(error) }
        guard got == n else { throw .truncated }
        let count = try context.open(UnsafeRawBufferPointer(box), index: index, final: isLast, key: fileKey, into: clear)
        chunksDecrypted += 1
        bytesDecrypted += Int64(count)
        cached = (index, count)
        return count
    }

    /// Hands the clear bytes of `range` (clipped to the file) to `body`, one piece per chunk, each
    /// only after its chunk authenticated. Errors thrown by `body` pass through unchanged.
    package func forEachPiece(_ range: Range<Int64>, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let chunk = Int64(BlobFormat.chunkSize)
        var at = max(0, range.lowerBound)
        let end = min(range.upperBound, plainSize)
        while at < end {
            let index = at / chunk
            let count = try load(index)
            let from = Int(at - index * chunk), to = Int(min(end - index * chunk, Int64(count)))
            guard from < to else { throw BlobError.truncated }
            try body(UnsafeRawBufferPointer(rebasing: clear[from..<to]))
            at += Int64(to - from)
        }
    }

    /// The clear bytes `offset ..< offset + count`, fewer where the file ends.
    package func read(_ offset: Int64, _ count: Int) throws(BlobError) -> [UInt8] {
        guard offset >= 0, count > 0, offset < plainSize else { return [] }
        let end = offset + min(Int64(count), plainSize - offset)
        var out = [UInt8]()
        out.reserveCapacity(Int(end - offset))
        do { try forEachPiece(offset..<end) { out.append(contentsOf: $0) } } catch let e as BlobError { throw e } catch {
            throw .tampered  // (the closure above throws nothing)
        }
        return out
    }
}
