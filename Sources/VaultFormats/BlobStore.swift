// Where sealed blobs live, behind a small contract (issue 9): stage → publish (durable), open
// (streaming), delete, list. The engine holds the keys; a store only ever sees ciphertext. The vault
// directory's `blobs/ab/<id>` layout is the first implementation; an object-store backend implements
// the same protocol (staging stays a local ciphertext file, publish uploads it) without touching the
// importer. `Tests/VaultStoreTests/BlobStoreConformanceTests.swift` is the suite every store passes.
import Foundation
package import VaultIO
#if canImport(Glibc)
import Glibc
#endif

/// Reads of a blob's bytes: sequential (a whole blob) and positional (a seekable blob's chunks).
package protocol BlobReading {
    /// Fills `buffer` as far as the blob goes; returns the bytes read (fewer only at the end).
    func readFully(into buffer: UnsafeMutableRawBufferPointer) throws(IOFailure) -> Int
    /// Fills `buffer` from byte `offset` as far as the blob goes, without moving the sequential
    /// position; returns the bytes read (fewer only at the end).
    func readFully(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(IOFailure) -> Int
    /// The blob's size in bytes now.
    func size() throws(IOFailure) -> Int64
}

extension FileIO.Descriptor: BlobReading {}

/// A blob being written: its ciphertext goes to `path`, a local file no reader sees until `publish`.
package struct StagedBlob: Sendable, Equatable {
    package let id: BlobID
    package let path: String
    package init(id: BlobID, path: String) {
        self.id = id
        self.path = path
    }
}

/// What `list` finds: the blobs, and names in the store that are not blobs (reported by `verify`).
package struct BlobListing: Sendable, Equatable {
    package var blobs: [BlobID: Int64] = [:]
    package var foreign: [String] = []
}

package protocol BlobStore: Sendable {
    /// A new staging destination for blob `id` (the caller creates the file exclusively).
    func stage(_ id: BlobID) -> StagedBlob
    /// Makes staged blobs durable, runs `beforeVisible` (the catalog lists them as pending there, so
    /// that a crash from here on leaves nothing unaccounted for), then makes them visible under their
    /// ids, durably. One sync per step for the whole group, not one per blob.
    func publish(_ staged: [StagedBlob], beforeVisible: () throws -> Void) throws
    /// Removes a staged blob that will not be published.
    func discard(_ staged: StagedBlob)
    /// The blob's bytes, for streaming. `BlobError.missing` if there is no such blob.
    func open(_ id: BlobID) throws(BlobError) -> any BlobReading
    /// The blob's size, or nil if it is not there.
    func size(_ id: BlobID) -> Int64?
    /// Deletes blobs (absent ones are fine), durably.
    func delete(_ ids: [BlobID]) throws(IOFailure)
    /// Every published blob with its size, and anything else found in the store.
    func list() -> BlobListing
}

/// The vault directory's store: `blobs/ab/<id>` (256 fan-out directories) and staging in `tmp/`.
package struct DirectoryBlobStore: BlobStore {
    package let layout: VaultLayout

    package init(layout: VaultLayout) { self.layout = layout }

    package func stage(_ id: BlobID) -> StagedBlob {
        StagedBlob(id: id, path: layout.tmp + "/" + id.hexString + ".partial")
    }

    package func publish(_ staged: [StagedBlob], beforeVisible: () throws -> Void) throws {
        guard !staged.isEmpty else { return }
        // 1. Every staged blob's bytes on disk (one syncfs for the group, not one fsync per file).
        try FileIO.syncFilesystem(layout.tmp)
        try beforeVisible()
        for s in staged {
            let final = layout.blob(s.id)
            let parent = (final as NSString).deletingLastPathComponent
            // A fan-out directory lost (e.g. a partial restore): make it again.
            if !FileIO.isDirectory(parent) { try FileIO.makeDirectory(parent) }
            try FileIO.rename(s.path, final)
        }
        // 2. The renames (and new directories) durable before anyone refers to them.
        try FileIO.syncFilesystem(layout.blobs)
    }

    package func discard(_ staged: StagedBlob) { _ = Glibc.unlink(staged.path) }

    package func open(_ id: BlobID) throws(BlobError) -> any BlobReading {
        do { return try FileIO.Descriptor.open(layout.blob(id), flags: O_RDONLY) } catch {
            throw error.errno == ENOENT ? .missing : .io(error)
        }
    }

    package func size(_ id: BlobID) -> Int64? { FileIO.fileSize(layout.blob(id)) }

    package func delete(_ ids: [BlobID]) throws(IOFailure) {
        guard !ids.isEmpty else { return }
        for id in ids { try FileIO.unlink(layout.blob(id)) }
        try FileIO.syncFilesystem(layout.blobs)
    }

    package func list() -> BlobListing {
        var listing = BlobListing()
        for a in FileIO.list(layout.blobs).sorted() {
            let pa = layout.blobs + "/" + a
            guard FileIO.isDirectory(pa) else {
                listing.foreign.append("blobs/\(a)")
                continue
            }
            for name in FileIO.list(pa).sorted() {
                if let id = BlobID(hex: name), id.relativePath == "blobs/\(a)/\(name)", let size = FileIO.fileSize(pa + "/" + name) {
                    listing.blobs[id] = size
                } else {
                    listing.foreign.append("blobs/\(a)/\(name)")
                }
            }
        }
        return listing
    }
}
