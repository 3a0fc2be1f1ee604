// The instances of one WADO-RS answer, resolved once (issue 12): each patient key unwrapped once for
// the whole answer, each instance's Part 10 check made with that key, and each instance then read
// back through the engine's one reader (`InstanceReader`) without being resolved again. Any thread
// may read any instance: the server decrypts several at a time (`VaultServer.OrderedRetrieval`).
import VaultCrypto
import VaultKeys
import VaultFormats

/// What decrypting the instances of one retrieval needs, in the answer's order.
package struct RetrievalSource: Sendable {
    private let instances: [StoredInstance]
    private let blobSizes: [Int64]
    private let reader: InstanceReader

    fileprivate init(instances: [StoredInstance], blobSizes: [Int64], reader: InstanceReader) {
        self.instances = instances
        self.blobSizes = blobSizes
        self.reader = reader
    }

    package var count: Int { instances.count }

    /// Instance `i`'s clear size, as the catalog recorded it.
    package func plainSize(_ i: Int) -> Int64 { instances[i].plainSize }

    /// Decrypts instance `i` into `sink`, every chunk authenticated before `sink` sees it, the size
    /// checked against the catalog at the end (anything else is `BlobError.tampered`). Errors thrown by
    /// `sink` pass through.
    package func read(_ i: Int, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try reader.readRecorded(instances[i], fingerprint: false, sink: sink)
    }

    /// The PS3.10 file meta to send in front of instance `i` (`Vault.part10FileMeta`), empty when it
    /// starts with one or when its header cannot be read (it is then sent as stored).
    package func fileMeta(_ i: Int) -> [UInt8] {
        ((try? reader.part10FileMeta(instances[i], blobSize: blobSizes[i])) ?? nil) ?? []
    }
}

extension Vault {
    /// The retrieval's instances with their blobs and keys: one unwrap per patient, not per instance.
    package func retrievalSource(_ items: [RetrievableInstance]) throws -> RetrievalSource {
        var keys: [[UInt8]: SymmetricKey] = [:]
        let stored = try items.map { item in
            let r = item.resolved
            guard let id = BlobID(hex: r.row.blobID) else { throw VaultError.catalog("bad blob id in catalog") }
            let key = try keys[r.patientRef] ?? patientKey(ref: r.patientRef, wrapped: r.wrappedPatientKey)
            keys[r.patientRef] = key
            return StoredInstance(blobID: id, patientKey: key, plainSize: r.row.plainSize, contentMAC: r.row.contentMAC)
        }
        return RetrievalSource(instances: stored, blobSizes: items.map(\.resolved.row.blobSize), reader: instanceReader)
    }
}
