// The one way the engine reads an instance back (issue 9): export, verify, the read-back before
// `import --remove-source` deletes an original, and WADO all come through here.
import VaultCrypto
import VaultFormats
import VaultKeys

/// What the catalog recorded about one instance's blob, and the key that opens it.
struct StoredInstance {
    let blobID: BlobID
    let patientKey: SymmetricKey
    let plainSize: Int64
    let contentMAC: [UInt8]
}

/// Reads a blob back: every chunk authenticated (the AEAD binds the blob id) before `sink` sees it,
/// then the size and, with `fingerprint`, the keyed fingerprint of the clear bytes compared with what
/// the catalog recorded. A streamed answer skips the fingerprint, because its bytes are sent before it
/// could be compared.
struct InstanceReader {
    let blobs: any BlobStore
    let contentKey: SymmetricKey

    /// What a full read found.
    struct Outcome {
        let digest: BlobDigest
        /// The size and (if checked) the fingerprint are the ones the catalog recorded.
        let isTheRecordedFile: Bool
    }

    func read(_ instance: StoredInstance, fingerprint: Bool, sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Outcome {
        let digest = try BlobCodec.decrypt(
            from: try blobs.open(instance.blobID), id: instance.blobID, patientKey: instance.patientKey, contentKey: contentKey,
            fingerprint: fingerprint, sink: sink)
        let same = digest.plainSize == instance.plainSize && (!fingerprint || constantTimeEquals(digest.contentMAC, instance.contentMAC))
        return Outcome(digest: digest, isTheRecordedFile: same)
    }

    /// Opens a format-2 blob for reads by range (`SeekableBlob`), its size checked against the
    /// catalog's `blobSize` and its clear size against `plainSize`; nil for a format-1 blob, which is
    /// read from its start (`read`).
    func openRanges(_ instance: StoredInstance, blobSize: Int64) throws -> SeekableBlob? {
        guard let blob = try SeekableBlob.open(try blobs.open(instance.blobID), id: instance.blobID, patientKey: instance.patientKey, expectedSize: blobSize)
        else { return nil }
        guard blob.plainSize == instance.plainSize else { throw BlobError.tampered }
        return blob
    }

    /// Reads and insists on the recorded file: anything else is `BlobError.tampered`.
    func readRecorded(_ instance: StoredInstance, fingerprint: Bool, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard try read(instance, fingerprint: fingerprint, sink: sink).isTheRecordedFile else { throw BlobError.tampered }
    }
}

extension Vault {
    /// Where this vault's blobs live (the directory layout; see `BlobStore`).
    var blobStore: any BlobStore { DirectoryBlobStore(layout: layout) }
    var instanceReader: InstanceReader { InstanceReader(blobs: blobStore, contentKey: keyring.contentMAC) }
}
