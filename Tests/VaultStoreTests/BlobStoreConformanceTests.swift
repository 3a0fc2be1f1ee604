import Foundation
import Testing
import TestSupport
import VaultFormats
import VaultIO
#if canImport(Glibc)
import Glibc
#endif

/// What every `BlobStore` must do (issue 9): the vault directory's store today, an object-store
/// backend later (add its factory to `stores`). Real files on a real filesystem; the bytes are
/// arbitrary ciphertext as far as a store is concerned.
@Suite struct BlobStoreConformanceTests {
    /// A fresh, empty store and a way to remove it.
    struct Backend: CustomStringConvertible, Sendable {
        let description: String
        let make: @Sendable () throws -> (store: any BlobStore, cleanup: @Sendable () -> Void)
    }

    static let stores: [Backend] = [
        Backend(description: "DirectoryBlobStore") {
            let dir = TempDir()
            let layout = VaultLayout(root: dir.path)
            try FileIO.makeDirectory(layout.blobs)
            try FileIO.makeDirectory(layout.tmp)
            for fan in BlobID.fanOut { try FileIO.makeDirectory(layout.blobs + "/" + fan) }
            return (DirectoryBlobStore(layout: layout), { dir.remove() })
        }
    ]

    static func stageBytes(_ store: any BlobStore, _ bytes: [UInt8]) throws -> StagedBlob {
        let staged = store.stage(BlobID.random())
        let d = try FileIO.Descriptor.open(staged.path, flags: O_WRONLY | O_CREAT | O_EXCL)
        try d.writeAll(bytes)
        try d.close()
        return staged
    }

    static func readAll(_ store: any BlobStore, _ id: BlobID) throws -> [UInt8] {
        let r = try store.open(id)
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buf.withUnsafeMutableBytes { (b) throws(IOFailure) in try r.readFully(into: b) }
            out += buf[0..<n]
            if n < buf.count { return out }
        }
    }

    @Test(arguments: stores) func stagedBlobsAreInvisibleUntilPublished(_ backend: Backend) throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        let bytes = (0..<10_000).map { UInt8($0 % 253) }
        let staged = try Self.stageBytes(store, bytes)
        #expect(store.list().blobs.isEmpty)
        #expect(store.size(staged.id) == nil)
        #expect(throws: BlobError.missing) { _ = try store.open(staged.id) }
        var ranBeforeVisible = false
        try store.publish([staged]) {
            ranBeforeVisible = true
            #expect(store.size(staged.id) == nil, "visible before the catalog could list it as pending")
        }
        #expect(ranBeforeVisible)
        #expect(store.list().blobs == [staged.id: Int64(bytes.count)])
        #expect(try Self.readAll(store, staged.id) == bytes)
    }

    @Test(arguments: stores) func aFailureBeforeVisibilityPublishesNothing(_ backend: Backend) throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        let staged = try Self.stageBytes(store, [1, 2, 3])
        struct CatalogDown: Error {}
        #expect(throws: CatalogDown.self) { try store.publish([staged]) { throw CatalogDown() } }
        #expect(store.list().blobs.isEmpty)
        store.discard(staged)
        #expect(!FileIO.exists(staged.path))
    }

    @Test(arguments: stores) func aGroupIsPublishedTogetherAndStreamsBack(_ backend: Backend) throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        var expected: [BlobID: [UInt8]] = [:]
        var group: [StagedBlob] = []
        for i in 0..<20 {
            let bytes = [UInt8](repeating: UInt8(i), count: 1 + i * 9_999)
            let s = try Self.stageBytes(store, bytes)
            expected[s.id] = bytes
            group.append(s)
        }
        try store.publish(group) {}
        #expect(store.list().blobs.count == 20)
        for (id, bytes) in expected {
            #expect(store.size(id) == Int64(bytes.count))
            #expect(try Self.readAll(store, id) == bytes)
        }
    }

    /// Format-2 blobs are read by range: positional reads anywhere, in any order, and the size.
    @Test(arguments: stores) func aBlobReadsAtAnyOffset(_ backend: Backend) throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        let bytes = (0..<300_000).map { UInt8(($0 * 13) % 251) }
        let s = try Self.stageBytes(store, bytes)
        try store.publish([s]) {}
        let r = try store.open(s.id)
        #expect(try r.size() == Int64(bytes.count))
        var buf = [UInt8](repeating: 0, count: 70_000)
        for offset in [200_000, 0, 65_552, 299_990, 300_000, 400_000] {
            let n = try buf.withUnsafeMutableBytes { (b) throws(IOFailure) in try r.readFully(at: Int64(offset), into: b) }
            let want = offset < bytes.count ? Array(bytes[offset..<min(bytes.count, offset + buf.count)]) : []
            #expect(Array(buf[0..<n]) == want, "at \(offset)")
        }
        // Positional reads leave the sequential position alone.
        #expect(try Self.readAll(store, s.id) == bytes)
        let n = try buf.withUnsafeMutableBytes { (b) throws(IOFailure) in try r.readFully(into: b) }
        #expect(Array(buf[0..<n]) == Array(bytes[0..<70_000]))
    }

    @Test(arguments: stores) func deleteIsIdempotentAndListReportsForeignNames(_ backend: Backend) throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        let a = try Self.stageBytes(store, [7]), b = try Self.stageBytes(store, [8, 9])
        try store.publish([a, b]) {}
        try store.delete([a.id, BlobID.random()])  // an absent id is fine
        try store.delete([a.id])
        #expect(store.list().blobs == [b.id: 2])
        #expect(throws: BlobError.missing) { _ = try store.open(a.id) }
        if let dir = store as? DirectoryBlobStore {
            try writeBytes(dir.layout.blobs + "/00/not-a-blob", [1])
            try writeBytes(dir.layout.blobs + "/stray", [1])
            #expect(Set(store.list().foreign) == ["blobs/00/not-a-blob", "blobs/stray"])
            #expect(store.list().blobs == [b.id: 2])
        }
    }
}
