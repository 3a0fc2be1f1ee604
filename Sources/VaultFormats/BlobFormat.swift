// The encrypted blob: one per DICOM file. Byte layout and rules in docs/file-format.md.
public import VaultIO
import Foundation
package import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// A blob's random 128-bit name. Never derived from a UID or from the file's bytes.
public struct BlobID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public static func random() -> BlobID { BlobID(bytes: secureRandomBytes(16)) }
    package init(bytes: [UInt8]) {
        precondition(bytes.count == 16)
        self.bytes = bytes
    }
    public init?(hex s: String) {
        guard s.utf8.count == 32, let b = unhex(s), s == s.lowercased() else { return nil }
        bytes = b
    }
    public var hexString: String { hex(bytes) }
    public var description: String { hexString }
    /// `blobs/ab/<id>` relative to the vault: 256 fan-out directories, all made when the vault is
    /// created, so an import never creates a directory (a million blobs is ~4,000 per directory).
    package var relativePath: String {
        let h = hexString
        return "blobs/\(h.prefix(2))/\(h)"
    }

    /// The 256 fan-out directory names, "00" … "ff".
    package static let fanOut: [String] = (0..<256).map { hex([UInt8($0)]) }
}

/// Why a blob could not be opened. `verify` prints these next to the blob's id.
public enum BlobError: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case notABlob
    case unsupportedVersion(UInt16)
    /// The header names another blob: the file was swapped or renamed.
    case idMismatch
    /// A tag did not verify: a flipped bit, or the wrong key.
    case tampered
    case truncated
    case trailingData
    case io(IOFailure)

    public var description: String {
        switch self {
        case .missing: "missing"
        case .notABlob: "not a MedVault blob (bad magic)"
        case .unsupportedVersion(let v): "unsupported blob format version \(v)"
        case .idMismatch: "swapped: the blob's authenticated id differs from its name"
        case .tampered: "altered: authentication failed"
        case .truncated: "truncated"
        case .trailingData: "unexpected bytes after the final chunk"
        case .io(let f): f.description
        }
    }
}

package enum BlobFormat {
    package static let magic: [UInt8] = Array("MEDVBLOB".utf8)
    /// Format 1: one secretstream (§5). Read forever, written only by tests.
    package static let streamVersion: UInt16 = 1
    /// Format 2: independently sealed chunks, seekable (§5a). What new blobs are.
    package static let seekableVersion: UInt16 = 2
    /// The version `BlobCodec.encrypt` writes.
    package static let version: UInt16 = seekableVersion
    package static let chunkSize = 64 * 1024
    package static let idOffset = 12
    package static let prefixLength = 28  // magic 8, version 2, reserved 2, id 16
    package static var wrappedKeyLength: Int { KeyWrap.wrappedByteCount }  // 72

    /// Format 1's layout (docs/file-format.md §5).
    package enum V1 {
        package static var authenticatedHeaderLength: Int { prefixLength + wrappedKeyLength }  // 100
        package static var headerLength: Int { authenticatedHeaderLength + SecretStream.headerByteCount }  // 124
        package static var chunkOverhead: Int { SecretStream.chunkOverhead }  // 17
    }

    package static func prefix(id: BlobID, version: UInt16 = version) -> [UInt8] {
        magic + [UInt8(version >> 8), UInt8(version & 0xFF), 0, 0] + id.bytes
    }

    /// Associated data for the file key: the prefix (magic, version, id).
    package static func fileKeyAssociatedData(id: BlobID, version: UInt16 = version) -> [UInt8] {
        Array("medvault.v1.file-key|".utf8) + prefix(id: id, version: version)
    }

    /// Ciphertext size for a clear file of `size` bytes: full chunks, the last one final; an empty
    /// file is one empty final chunk.
    package static func blobSize(forPlainSize size: Int64, version: UInt16 = version) -> Int64 {
        let chunks = max(1, (size + Int64(chunkSize) - 1) / Int64(chunkSize))
        if version == streamVersion { return Int64(V1.headerLength) + size + chunks * Int64(V1.chunkOverhead) }
        return Int64(V2.headerLength) + size + chunks * Int64(V2.tagLength)
    }
}

/// The result of writing or reading one blob.
package struct BlobDigest: Sendable, Equatable {
    package var plainSize: Int64
    package var blobSize: Int64
    /// Keyed BLAKE2b of the clear bytes.
    package var contentMAC: [UInt8]
    /// Plain BLAKE2b-256 of the blob file as written (empty when the blob was read, not written).
    package var ciphertextHash: [UInt8] = []
}

/// Streams a clear file into a blob and a blob back out, in fixed-size buffers: memory does not
/// grow with file size.
package enum BlobCodec {
    /// Encrypts everything readable from `source` into a new file at `destination` (created, must not
    /// exist), fsyncs it, and returns its digest. On any error the partial file is removed. New blobs
    /// are format 2; `version` 1 is for tests of the format-1 reader.
    package static func encrypt(
        source: any FileIO.SequentialSource, to destination: String, id: BlobID, patientKey: SymmetricKey,
        contentKey: SymmetricKey, sync: Bool = true, version: UInt16 = BlobFormat.version, progress: (Int) -> Void = { _ in }
    ) throws -> BlobDigest {
        precondition(version == BlobFormat.streamVersion || version == BlobFormat.seekableVersion)
        let out = try FileIO.Descriptor.open(destination, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        do {
            let digest = try encryptBody(
                source: source, out: out, id: id, patientKey: patientKey, contentKey: contentKey, version: version, progress: progress)
            if sync { try out.sync() }
            try out.close()
            return digest
        } catch {
            _ = Glibc.unlink(destination)
            throw error
        }
    }

    private static func encryptBody(
        source: any FileIO.SequentialSource, out: FileIO.Descriptor, id: BlobID, patientKey: SymmetricKey,
        contentKey: SymmetricKey, version: UInt16, progress: (Int) -> Void
    ) throws -> BlobDigest {
        // A fresh file key, used for this blob only, wrapped by the patient's key.
        guard let fileKey = try? SymmetricKey.random() else {
            throw IOFailure(operation: "allocate secure memory for", path: out.path, errno: ENOMEM)
        }
        let wrapped = KeyWrap.wrap(fileKey, with: patientKey, associatedData: BlobFormat.fileKeyAssociatedData(id: id, version: version))
        var authenticatedHeader = BlobFormat.prefix(id: id, version: version) + wrapped
        if version == BlobFormat.seekableVersion { authenticatedHeader += secureRandomBytes(BlobFormat.V2.noncePrefixLength) }
        // The ciphertext is hashed as it is written: the backup manifest needs it (docs/backup.md).
        let cipherHasher = BLAKE2bHasher()
        cipherHasher.update(authenticatedHeader)
        try out.writeAll(authenticatedHeader)
        let hasher = KeyedHasher(key: contentKey)
        var blobSize = Int64(authenticatedHeader.count)
        let plain: (UnsafeRawBufferPointer) -> Void = { chunk in
            hasher.update(chunk)
            progress(chunk.count)
        }
        let emit: (UnsafeRawBufferPointer) throws -> Void = { sealed in
            cipherHasher.update(sealed)
            try out.writeAll(sealed)
            blobSize += Int64(sealed.count)
        }
        let plainSize =
            version == BlobFormat.seekableVersion
            ? try SeekableCodec.seal(from: source, fileKey: fileKey, header: authenticatedHeader, plain: plain, emit: emit)
            : try StreamCodec.seal(
                from: source, key: fileKey, associatedData: authenticatedHeader, chunkSize: BlobFormat.chunkSize, plain: plain, emit: emit)
        return BlobDigest(plainSize: plainSize, blobSize: blobSize, contentMAC: hasher.finalize(), ciphertextHash: cipherHasher.finalize())
    }

    /// The id a blob's header claims (unauthenticated; for diagnostics only), or nil if unreadable.
    package static func headerID(from d: any BlobReading) -> BlobID? {
        var prefix = [UInt8](repeating: 0, count: BlobFormat.prefixLength)
        guard let n = try? prefix.withUnsafeMutableBytes({ (b) throws(IOFailure) in try d.readFully(into: b) }),
            n == BlobFormat.prefixLength, Array(prefix[0..<8]) == BlobFormat.magic
        else { return nil }
        return BlobID(bytes: Array(prefix[BlobFormat.idOffset..<BlobFormat.prefixLength]))
    }

    /// Decrypts the blob at `path`, checking every tag, and hands the clear bytes to `sink` in
    /// chunks of at most 64 KiB. Nothing is handed over before its chunk has authenticated.
    /// With `fingerprint` false the keyed fingerprint of the clear bytes is not computed (its
    /// `contentMAC` is empty): the AEAD still authenticates every chunk and the blob id.
    package static func decrypt(
        path: String, id: BlobID, patientKey: SymmetricKey, contentKey: SymmetricKey, fingerprint: Bool = true,
        sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> BlobDigest {
        let input: FileIO.Descriptor
        do { input = try FileIO.Descriptor.open(path, flags: O_RDONLY) } catch {
            if error.errno == ENOENT { throw BlobError.missing }
            throw BlobError.io(error)
        }
        return try decrypt(from: input, id: id, patientKey: patientKey, contentKey: contentKey, fingerprint: fingerprint, sink: sink)
    }

    /// Reads and checks the clear header of either format: magic, version, id, and the file key
    /// (unwrapped with the patient key), read from `input`'s sequential position, which must be the
    /// blob's start; `input` is left just after the header.
    /// Returns (version, authenticated header, file key, format 1's secretstream header).
    static func readHeader(
        from input: any BlobReading, id: BlobID, patientKey: SymmetricKey
    ) throws(BlobError) -> (version: UInt16, authenticated: [UInt8], fileKey: SymmetricKey, streamHeader: [UInt8]) {
        func read(_ n: Int) throws(BlobError) -> [UInt8] {
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 1)
            defer { b.deallocate() }
            let got: Int
            do { got = try input.readFully(into: b) } catch { throw .io(error) }
            return Array(b[0..<got])
        }
        let prefix = try read(BlobFormat.prefixLength)
        guard prefix.count >= 8, Array(prefix[0..<8]) == BlobFormat.magic else {
            throw prefix.count < 8 ? .truncated : .notABlob
        }
        guard prefix.count == BlobFormat.prefixLength else { throw .truncated }
        let version = UInt16(prefix[8]) << 8 | UInt16(prefix[9])
        let rest: Int
        switch version {
        case BlobFormat.streamVersion: rest = BlobFormat.V1.headerLength - BlobFormat.prefixLength
        case BlobFormat.seekableVersion: rest = BlobFormat.V2.headerLength - BlobFormat.prefixLength
        default: throw .unsupportedVersion(version)
        }
        let tail = try read(rest)
        guard tail.count == rest else { throw .truncated }
        guard Array(prefix[BlobFormat.idOffset..<BlobFormat.prefixLength]) == id.bytes else { throw .idMismatch }
        let header = prefix + tail
        let wrapped = Array(header[BlobFormat.prefixLength..<(BlobFormat.prefixLength + BlobFormat.wrappedKeyLength)])
        let fileKey: SymmetricKey
        do {
            fileKey = try KeyWrap.unwrap(
                wrapped, with: patientKey, associatedData: BlobFormat.fileKeyAssociatedData(id: id, version: version))
        } catch {
            throw .tampered
        }
        if version == BlobFormat.streamVersion {
            return (
                version, Array(header[0..<BlobFormat.V1.authenticatedHeaderLength]), fileKey,
                Array(header[BlobFormat.V1.authenticatedHeaderLength...])
            )
        }
        return (version, header, fileKey, [])
    }

    /// `decrypt(path:…)` from a blob store's reader. Either format.
    package static func decrypt(
        from input: any BlobReading, id: BlobID, patientKey: SymmetricKey, contentKey: SymmetricKey, fingerprint: Bool = true,
        sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> BlobDigest {
        let header = try readHeader(from: input, id: id, patientKey: patientKey)
        let hasher = fingerprint ? KeyedHasher(key: contentKey) : nil
        let sizes: (plain: Int64, cipher: Int64)
        if header.version == BlobFormat.seekableVersion {
            sizes = try SeekableCodec.open(from: input, fileKey: header.fileKey, header: header.authenticated) { plain in
                hasher?.update(plain)
                try sink(plain)
            }
            let blobSize = Int64(BlobFormat.V2.headerLength) + sizes.cipher
            return BlobDigest(plainSize: sizes.plain, blobSize: blobSize, contentMAC: hasher?.finalize() ?? [])
        }
        do {
            sizes = try StreamCodec.open(
                from: input, key: header.fileKey, streamHeader: header.streamHeader,
                associatedData: header.authenticated, chunkSize: BlobFormat.chunkSize
            ) { plain in
                hasher?.update(plain)
                try sink(plain)
            }
        } catch let failure as StreamCodec.Failure {
            switch failure {
            case .truncated: throw BlobError.truncated
            case .unauthentic: throw BlobError.tampered  // (`verify` tells a cut-off last chunk apart by the recorded size)
            case .trailingData: throw BlobError.trailingData
            case .io(let e): throw BlobError.io(e)
            }
        }
        let blobSize = Int64(BlobFormat.V1.headerLength) + sizes.cipher
        return BlobDigest(plainSize: sizes.plain, blobSize: blobSize, contentMAC: hasher?.finalize() ?? [])
    }
}
