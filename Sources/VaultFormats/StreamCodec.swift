// The one chunked secretstream loop. Blobs and snapshots are both: a clear header (the associated
// data of every chunk), a secretstream header, then chunks of `chunkSize` clear bytes, the last one
// tagged FINAL, so that truncation, reordering and appended bytes are all detected.
package import VaultIO
package import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

package enum StreamCodec {
    /// Why a sealed stream could not be opened. Each caller names it in its own terms.
    package enum Failure: Error, Equatable {
        /// The data ends before the FINAL chunk.
        case truncated
        /// A chunk (or the stream header) fails authentication: altered, or another key.
        case unauthentic
        /// Bytes after the FINAL chunk.
        case trailingData
        case io(IOFailure)
    }

    /// Encrypts everything readable from `source` under `key`. `emit` receives the ciphertext (the
    /// secretstream header first, then sealed chunks, batched up to 16 chunks per call); `plain` sees
    /// each clear chunk before it is sealed. Clear buffers are wiped before release. Returns the
    /// number of clear bytes.
    package static func seal(
        from source: any FileIO.SequentialSource, key: SymmetricKey, associatedData: [UInt8], chunkSize: Int,
        plain: (UnsafeRawBufferPointer) -> Void = { _ in }, emit: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> Int64 {
        let stream = StreamEncryptor(key: key)
        try stream.header.withUnsafeBytes { try emit($0) }
        return try associatedData.withUnsafeBytes { ad in
            try sealChunks(
                from: source, chunkSize: chunkSize, sealedChunkSize: chunkSize + SecretStream.chunkOverhead, plain: plain, emit: emit
            ) { clear, _, isFinal, out in
                stream.push(clear, final: isFinal, associatedData: ad, into: out)
            }
        }
    }

    /// The sealing loop every chunked format shares (secretstream blobs and snapshots, and blob format
    /// 2's independently sealed chunks): reads `source` a chunk ahead, so that the last chunk is known
    /// when it is sealed; shows each clear chunk to `plain`; `sealChunk(clear, index, isFinal, into:)`
    /// seals it into the batched write buffer and returns the sealed length (at most
    /// `sealedChunkSize`); `emit` receives up to 16 sealed chunks per call. An empty source is one
    /// empty final chunk. Clear buffers are wiped before release. Returns the number of clear bytes.
    package static func sealChunks(
        from source: any FileIO.SequentialSource, chunkSize: Int, sealedChunkSize: Int,
        plain: (UnsafeRawBufferPointer) -> Void, emit: (UnsafeRawBufferPointer) throws -> Void,
        sealChunk: (UnsafeRawBufferPointer, Int64, Bool, UnsafeMutableRawBufferPointer) -> Int
    ) throws -> Int64 {
        // Two read buffers (read-ahead tells which chunk is last) and one batched write buffer.
        let writeCapacity = 16 * sealedChunkSize
        let bufA = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        let bufB = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        let wbuf = UnsafeMutableRawBufferPointer.allocate(byteCount: writeCapacity, alignment: 64)
        defer {
            bufA.initializeMemory(as: UInt8.self, repeating: 0)
            bufB.initializeMemory(as: UInt8.self, repeating: 0)
            bufA.deallocate(); bufB.deallocate(); wbuf.deallocate()
        }
        var current = bufA, next = bufB
        var total: Int64 = 0
        var pending = 0
        var index: Int64 = 0
        var currentCount = try source.readFully(into: current)
        while true {
            var isFinal = currentCount < chunkSize
            var nextCount = 0
            if !isFinal {
                nextCount = try source.readFully(into: next)
                isFinal = nextCount == 0
            }
            let clear = UnsafeRawBufferPointer(rebasing: current[0..<currentCount])
            plain(clear)
            if pending + sealedChunkSize > writeCapacity {
                try emit(UnsafeRawBufferPointer(rebasing: wbuf[0..<pending]))
                pending = 0
            }
            pending += sealChunk(clear, index, isFinal, UnsafeMutableRawBufferPointer(rebasing: wbuf[pending...]))
            total += Int64(currentCount)
            if isFinal { break }
            swap(&current, &next)
            currentCount = nextCount
            index += 1
        }
        try emit(UnsafeRawBufferPointer(rebasing: wbuf[0..<pending]))
        return total
    }

    /// Decrypts the chunks that follow `streamHeader` in `input` (positioned just after it), checking
    /// every tag, and hands each clear chunk to `sink` only once it has authenticated. Errors thrown
    /// by `sink` pass through unchanged. Returns (clear bytes, ciphertext bytes read).
    package static func open(
        from input: any BlobReading, key: SymmetricKey, streamHeader: [UInt8], associatedData: [UInt8], chunkSize: Int,
        sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> (plain: Int64, cipher: Int64) {
        let stream: StreamDecryptor
        do { stream = try StreamDecryptor(key: key, header: streamHeader) } catch { throw Failure.unauthentic }
        let sealedChunk = chunkSize + SecretStream.chunkOverhead
        let cbuf = UnsafeMutableRawBufferPointer.allocate(byteCount: sealedChunk, alignment: 64)
        let pbuf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        defer {
            pbuf.initializeMemory(as: UInt8.self, repeating: 0)
            cbuf.deallocate(); pbuf.deallocate()
        }
        var plain: Int64 = 0, cipher: Int64 = 0
        try associatedData.withUnsafeBytes { ad in
            while true {
                let n: Int
                do { n = try input.readFully(into: cbuf) } catch let e as IOFailure { throw Failure.io(e) }
                if n == 0 { throw Failure.truncated }
                cipher += Int64(n)
                let result: (count: Int, isFinal: Bool)
                // (A cut-off last chunk also fails here; callers that know the expected size tell the two apart.)
                do { result = try stream.pull(UnsafeRawBufferPointer(rebasing: cbuf[0..<n]), associatedData: ad, into: pbuf) } catch {
                    throw Failure.unauthentic
                }
                try sink(UnsafeRawBufferPointer(rebasing: pbuf[0..<result.count]))
                plain += Int64(result.count)
                if result.isFinal { break }
                if n < sealedChunk { throw Failure.truncated }
            }
        }
        var extra: UInt8 = 0
        let more: Int
        do { more = try withUnsafeMutableBytes(of: &extra) { (b) throws(IOFailure) in try input.readFully(into: b) } } catch {
            throw Failure.io(error)
        }
        if more > 0 { throw Failure.trailingData }
        return (plain, cipher)
    }
}
