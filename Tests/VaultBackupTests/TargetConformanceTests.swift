import Foundation
import Testing
import TestSupport
@testable import VaultBackup

/// The `BackupTarget` contract (BackupTarget.swift), as one suite every backend runs. A new backend
/// (object storage) adds itself to `backends` and must pass unchanged.
@Suite struct BackupTargetConformanceTests {
    struct Backend: Sendable, CustomStringConvertible {
        let description: String
        let make: @Sendable (TempDir) throws -> any BackupTarget
    }

    static let backends = [
        Backend(description: "DirectoryTarget") { try DirectoryTarget(root: $0.sub("t"), locking: .exclusive) }
    ]

    struct Boom: Error {}

    @Test(arguments: backends) func stagedObjectsAppearWholeAtCommit(_ backend: Backend) throws {
        let dir = TempDir()
        defer { dir.remove() }
        let t = try backend.make(dir)
        try t.put("blobs/ab/x", bytes: [1, 2, 3])
        #expect(try t.size(of: "blobs/ab/x") == nil, "staged objects are not visible")
        #expect(try t.list(prefix: "").isEmpty)
        try t.commit()
        #expect(try t.size(of: "blobs/ab/x") == 3)
        #expect(try t.read("blobs/ab/x") == [1, 2, 3])
        // A put replaces; streaming reads return the same bytes.
        let big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try t.put("blobs/ab/x") { write in
            try big.withUnsafeBytes { b in
                try write(UnsafeRawBufferPointer(rebasing: b[0..<1_000_000]))
                try write(UnsafeRawBufferPointer(rebasing: b[1_000_000...]))
            }
        }
        try t.commit()
        var back: [UInt8] = []
        try t.read("blobs/ab/x") { piece in
            #expect(piece.count <= 1 << 20)
            back += piece
        }
        #expect(back == big)
        #expect(try t.read("blobs/ab/missing") == nil)
        #expect(try t.size(of: "snapshots/none") == nil)
    }

    @Test(arguments: backends) func failedAndInterruptedPutsLeaveNothing(_ backend: Backend) throws {
        let dir = TempDir()
        defer { dir.remove() }
        let t = try backend.make(dir)
        #expect(throws: Boom.self) {
            try t.put("blobs/ab/y") { write in
                try [UInt8](repeating: 7, count: 10).withUnsafeBytes { try write($0) }
                throw Boom()
            }
        }
        try t.commit()
        #expect(try t.size(of: "blobs/ab/y") == nil)
        try t.put("blobs/ab/z", bytes: [9])
        try t.recover()  // what an interrupted run staged never appears
        try t.commit()
        #expect(try t.size(of: "blobs/ab/z") == nil)
        #expect(try t.list(prefix: "").isEmpty)
    }

    @Test(arguments: backends) func deleteIsIdempotentAndListFiltersByPrefix(_ backend: Backend) throws {
        let dir = TempDir()
        defer { dir.remove() }
        let t = try backend.make(dir)
        for name in ["blobs/ab/1", "blobs/cd/2", "snapshots/manifest-000000000001.manifest", "medvault-backup.json"] {
            try t.put(name, bytes: Array(name.utf8))
        }
        try t.commit()
        #expect(Set(try t.list(prefix: "blobs/").map(\.name)) == ["blobs/ab/1", "blobs/cd/2"])
        #expect(try t.list(prefix: "snapshots/").map(\.name) == ["snapshots/manifest-000000000001.manifest"])
        #expect(try t.list(prefix: "").count == 4)
        #expect(try t.list(prefix: "blobs/").first { $0.name == "blobs/ab/1" }?.size == 10)
        try t.delete("blobs/ab/1")
        try t.delete("blobs/ab/1")
        try t.delete("never/was")
        try t.commit()
        #expect(Set(try t.list(prefix: "blobs/").map(\.name)) == ["blobs/cd/2"])
    }

    @Test(arguments: backends) func namesOutsideTheBackupAreRefused(_ backend: Backend) throws {
        let dir = TempDir()
        defer { dir.remove() }
        let t = try backend.make(dir)
        for bad in ["../x", "/etc/passwd", "a//b", "tmp/x", "", "a/./b", "blobs/../../x"] {
            #expect(throws: BackupError.invalidName(bad)) { try t.put(bad, bytes: [1]) }
        }
    }

    @Test func aDirectoryTargetKeepsOnlyItsLockInTmpAndExcludesTwoSyncs() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let t = try DirectoryTarget(root: dir.sub("t"), locking: .exclusive)
        try t.put("blobs/ab/x", bytes: [1])
        try t.commit()
        #expect(FileManager.default.subpaths(atPath: dir.sub("t/tmp")) == ["lock"])
        // A second writer waits for the first: probe the lock without blocking.
        let fd = open(dir.sub("t/tmp/lock"), O_RDONLY)
        defer { close(fd) }
        #expect(flock(fd, LOCK_SH | LOCK_NB) != 0)
        withExtendedLifetime(t) {}
    }
}
