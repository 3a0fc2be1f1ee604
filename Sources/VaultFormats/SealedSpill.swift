// A received instance too large to hold in memory (STOW-RS, C-STORE), sealed as it arrives.
//
// Its importer must parse it before it knows the patient, hence the patient key its blob is sealed
// with. So the bytes go first, as they arrive, into an unnamed file in the vault's tmp directory
// (O_TMPFILE: no name, gone when closed or on a crash), sealed with secretstream under a key that
// exists only in this process's memory and dies with it. The importer then reads it back, in order,
// as often as it needs (pre-scan, parse, seal into the blob): each pass is authenticated chunk by
// chunk, and a pass that does not end with the FINAL chunk fails. Clear bytes never reach a file.
import VaultCrypto
package import VaultIO
#if canImport(Glibc)
import Glibc
#endif

package final class SealedSpill: @unchecked Sendable {
    static let chunkSize = 64 * 1024
    static let sealedChunkSize = chunkSize + SecretStream.chunkOverhead
    static let associatedData = Array("medvault.v1.received-instance".utf8)
    /// Sealed chunks written per `write`.
    static let batchChunks = 16

    /// The unnamed file (internal for tests that damage it).
    let file: FileIO.Descriptor
    private let key: SymmetricKey
    private let encryptor: StreamEncryptor
    /// The chunk being filled (clear; wiped when sealed and on release).
    private let chunk: UnsafeMutableRawBufferPointer
    private var chunkFill = 0
    /// Sealed chunks not yet written.
    private let batch: UnsafeMutableRawBufferPointer
    private var batchFill = 0
    /// Clear bytes appended.
    package private(set) var size: Int64 = 0
    private var finished = false

    /// A new, empty spill in `directory` (the vault's tmp directory, so that it counts against the
    /// vault's disk).
    package init(directory: String) throws(IOFailure) {
        guard let key = try? SymmetricKey.random() else {
            throw IOFailure(operation: "allocate secure memory for", path: "a received instance", errno: ENOMEM)
        }
        file = try FileIO.Descriptor.openUnnamed(inDirectory: directory)
        self.key = key
        encryptor = StreamEncryptor(key: key)
        chunk = .allocate(byteCount: Self.chunkSize, alignment: 64)
        batch = .allocate(byteCount: Self.batchChunks * Self.sealedChunkSize, alignment: 64)
        try file.writeAll(encryptor.header)
    }

    deinit {
        chunk.initializeMemory(as: UInt8.self, repeating: 0)
        chunk.deallocate()
        batch.deallocate()
    }

    /// Seals `bytes` after what was appended before.
    package func append(_ bytes: UnsafeRawBufferPointer) throws(IOFailure) {
        precondition(!finished, "append after finish")
        var rest = bytes
        while !rest.isEmpty {
            // A full chunk is sealed only once more bytes come: the last chunk must carry FINAL.
            if chunkFill == Self.chunkSize { try seal(final: false) }
            let n = min(rest.count, Self.chunkSize - chunkFill)
            UnsafeMutableRawBufferPointer(rebasing: chunk[chunkFill..<chunkFill + n]).copyMemory(from: UnsafeRawBufferPointer(rebasing: rest[0..<n]))
            chunkFill += n
            size += Int64(n)
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    /// Seals the last chunk (FINAL) and writes everything out. Nothing can be appended after.
    package func finish() throws(IOFailure) {
        guard !finished else { return }
        try seal(final: true)
        try flush()
        finished = true
    }

    private func seal(final isFinal: Bool) throws(IOFailure) {
        if batchFill + Self.sealedChunkSize > batch.count { try flush() }
        let written = Self.associatedData.withUnsafeBytes { ad in
            encryptor.push(
                UnsafeRawBufferPointer(rebasing: chunk[0..<chunkFill]), final: isFinal, associatedData: ad,
                into: UnsafeMutableRawBufferPointer(rebasing: batch[batchFill...]))
        }
        batchFill += written
        UnsafeMutableRawBufferPointer(rebasing: chunk[0..<chunkFill]).initializeMemory(as: UInt8.self, repeating: 0)
        chunkFill = 0
    }

    private func flush() throws(IOFailure) {
        try file.writeAll(UnsafeRawBufferPointer(rebasing: batch[0..<batchFill]))
        batchFill = 0
    }

    /// A new pass over the clear bytes, from the first. Only after `finish`.
    package func reader() throws(IOFailure) -> Reader {
        guard finished else { throw IOFailure(operation: "read", path: "a received instance that is still arriving", errno: EINVAL) }
        return try Reader(self)
    }

    /// One pass over a finished spill: clear bytes, in order, each chunk authenticated before it is
    /// handed out.
    package final class Reader: FileIO.SequentialSource, @unchecked Sendable {
        private let spill: SealedSpill
        private let decryptor: StreamDecryptor
        private var offset: Int64
        private let sealed: UnsafeMutableRawBufferPointer
        /// The current chunk's clear bytes (wiped on release) and how far they were handed out.
        private let clear: UnsafeMutableRawBufferPointer
        private var clearCount = 0, clearUsed = 0

        init(_ spill: SealedSpill) throws(IOFailure) {
            self.spill = spill
            var header = [UInt8](repeating: 0, count: SecretStream.headerByteCount)
            let n = try header.withUnsafeMutableBytes { b in Result { () throws(IOFailure) in try spill.file.readFully(at: 0, into: b) } }.get()
            guard n == header.count, let decryptor = try? StreamDecryptor(key: spill.key, header: header) else { throw Self.unauthentic }
            self.decryptor = decryptor
            offset = Int64(n)
            sealed = .allocate(byteCount: SealedSpill.sealedChunkSize, alignment: 64)
            clear = .allocate(byteCount: SealedSpill.chunkSize, alignment: 64)
        }

        deinit {
            clear.initializeMemory(as: UInt8.self, repeating: 0)
            clear.deallocate()
            sealed.deallocate()
        }

        static let unauthentic = IOFailure(operation: "authenticate", path: "the sealed copy of a received instance", errno: EBADMSG)

        package func readFully(into buffer: UnsafeMutableRawBufferPointer) throws(IOFailure) -> Int {
            var total = 0
            while total < buffer.count {
                if clearUsed == clearCount {
                    if decryptor.finished { break }
                    try nextChunk()
                    continue
                }
                let n = min(buffer.count - total, clearCount - clearUsed)
                UnsafeMutableRawBufferPointer(rebasing: buffer[total..<total + n])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: clear[clearUsed..<clearUsed + n]))
                clearUsed += n
                total += n
            }
            return total
        }

        private func nextChunk() throws(IOFailure) {
            let n = try spill.file.readFully(at: offset, into: sealed)
            guard n >= SecretStream.chunkOverhead else { throw Self.unauthentic }  // ends before FINAL
            let opened = SealedSpill.associatedData.withUnsafeBytes { ad in
                try? decryptor.pull(UnsafeRawBufferPointer(rebasing: sealed[0..<n]), associatedData: ad, into: clear)
            }
            guard let opened else { throw Self.unauthentic }
            offset += Int64(n)
            clearCount = opened.count
            clearUsed = 0
            if opened.isFinal {
                // Nothing may follow the FINAL chunk.
                var probe: UInt8 = 0
                let extra = try withUnsafeMutableBytes(of: &probe) { b in Result { () throws(IOFailure) in try spill.file.readFully(at: offset, into: b) } }.get()
                guard extra == 0 else { throw Self.unauthentic }
            }
        }
    }
}
