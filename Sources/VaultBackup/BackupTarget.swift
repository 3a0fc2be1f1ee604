// Where backups go. One protocol; a directory (an external disk, a mounted NAS) is the first
// backend, object storage can follow without touching sync, verify or restore. See docs/backup.md.
import Foundation
import CSysShim
package import VaultIO
#if canImport(Glibc)
package import Glibc
#endif

/// One stored object: its name relative to the backup root (`blobs/ab/<id>`, `snapshots/…`) and size.
public struct BackupObject: Sendable, Equatable {
    public let name: String
    public let size: Int64
}

/// A backup destination. Names are relative paths with `/` separators, never `..`, never absolute.
///
/// Contract (every backend MUST keep it; the sync's crash safety rests on it):
/// - `put` stages an object. It becomes visible under its name **whole**, never partially, and
///   **durable**, at the latest when the next `commit()` returns. A failed or interrupted put leaves
///   no object (at most staging debris that `recover()` removes). A put replaces an existing object.
/// - If the `writer` closure given to `put` throws, the staged object is discarded.
/// - `delete` is idempotent (an absent object is not an error), durable after the next `commit()`.
/// - `list` and `size` see committed objects only, never staging.
/// - `recover()` removes what an interrupted run staged; it is safe to call at any time when no
///   other sync writes to the same target.
public protocol BackupTarget: Sendable {
    /// Where the backup is, for messages.
    var location: String { get }
    /// Every object whose name starts with `prefix` ("" for all), in no particular order.
    func list(prefix: String) throws -> [BackupObject]
    /// The size of an object, or nil if there is none.
    func size(of name: String) throws -> Int64?
    /// A whole (small) object, or nil if there is none.
    func read(_ name: String) throws -> [UInt8]?
    /// Streams an object's bytes to `body` in pieces of at most 1 MiB.
    func read(_ name: String, into body: (UnsafeRawBufferPointer) throws -> Void) throws
    /// Stages an object whose bytes `writer` produces by calling `write` as many times as it needs.
    func put(_ name: String, writer: (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws
    func delete(_ name: String) throws
    /// Makes every staged put and delete visible and durable.
    func commit() throws
    func recover() throws
}

extension BackupTarget {
    public func put(_ name: String, bytes: [UInt8]) throws {
        try put(name) { write in try bytes.withUnsafeBytes { try write($0) } }
    }
}

/// Errors of the backup layer. Each names the file and says what to do; no patient value exists here.
public enum BackupError: Error, Equatable, Sendable, CustomStringConvertible {
    case io(operation: String, path: String, errno: Int32)
    case invalidName(String)
    case notABackup(String)
    case wrongVault(location: String, expected: String, found: String)
    case noManifest(String)
    case backupIsNewer(location: String, backup: UInt64, vault: UInt64)
    case forked(location: String, sequence: UInt64)
    case sourceChanged(String)
    case blobDamaged(String)
    case destinationNotEmpty(String)
    case keyMismatch(String)

    public var description: String {
        switch self {
        case .io(let op, let path, let e): Self.ioMessage(op, path, e)
        case .invalidName(let n): "refusing the object name \"\(n)\": not a relative path inside the backup"
        case .notABackup(let p): "\(p) is not a MedVault backup (no medvault-backup.json)"
        case .wrongVault(let l, let e, let f): "\(l) holds a backup of vault \(f), not of vault \(e); use another destination"
        case .noManifest(let m): m
        case .backupIsNewer(let l, let b, let v):
            "the backup at \(l) is at snapshot \(b), newer than the vault's newest snapshot \(v): is this vault an older or restored copy? Nothing was changed; back it up to a new destination"
        case .forked(let l, let s): "the backup at \(l) holds a different snapshot \(s) than the vault: refusing to overwrite it; back up to a new destination"
        case .sourceChanged(let m): m
        case .blobDamaged(let m): m
        case .destinationNotEmpty(let p): "\(p) is not empty; restore into a new, empty directory"
        case .keyMismatch(let m): m
        }
    }

    package static func ioMessage(_ op: String, _ path: String, _ e: Int32) -> String {
        let reason = String(cString: strerror(e))
        if e == ENOSPC || e == EDQUOT { return "\(op) \(path): the disk is full (\(reason)); free space and run the command again" }
        return "\(op) \(path): \(reason)"
    }
}

/// A backup in a local directory: the same layout as the vault (blobs/ab/<id>, snapshots/), staging in
/// `tmp/` on the same filesystem, durability through `syncfs` once per commit rather than an fsync
/// per file (the recipe of the import's group commit, docs/design.md §4.4).
public final class DirectoryTarget: BackupTarget, @unchecked Sendable {
    public let root: String
    public var location: String { root }
    private let mutex = NSLock()
    /// Staged puts (name → staging path) and whether deletes happened, until the next commit.
    private var staged: [(name: String, path: String)] = []
    private var dirty = false
    private var lockFD: Int32 = -1

    public enum Locking: Sendable { case exclusive, shared }

    /// Opens (for `.exclusive`: creates) the backup directory and takes its lock, so that two syncs
    /// never write one backup and a verify does not read a half-committed one.
    public init(root: String, locking: Locking) throws {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
        if locking == .exclusive {
            try Posix.makeDirectory(r)
            try Posix.makeDirectory(r + "/tmp")
        } else if !Posix.isDirectory(r) {
            throw BackupError.io(operation: "open", path: r, errno: ENOENT)
        }
        let fd = open(r + "/tmp/lock", (locking == .exclusive ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0o600)
        if fd >= 0 {
            lockFD = fd
            while flock(fd, locking == .exclusive ? LOCK_EX : LOCK_SH) != 0 {
                if errno != EINTR { throw BackupError.io(operation: "lock", path: r + "/tmp/lock", errno: errno) }
            }
        } else if locking == .exclusive {
            throw BackupError.io(operation: "lock", path: r + "/tmp/lock", errno: errno)
        }  // a read-only medium without a lock file: verify and restore read it unlocked
    }

    deinit {
        if lockFD >= 0 { close(lockFD) }
    }

    package func path(_ name: String) throws -> String {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.isEmpty, !name.hasPrefix("/"), parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }), parts.first != "tmp" else {
            throw BackupError.invalidName(name)
        }
        return root + "/" + name
    }

    public func list(prefix: String) throws -> [BackupObject] {
        var out: [BackupObject] = []
        func walk(_ dir: String, _ rel: String) {
            for name in Posix.list(dir) {
                let p = dir + "/" + name, r = rel.isEmpty ? name : rel + "/" + name
                if rel.isEmpty && name == "tmp" { continue }
                var st = stat()
                guard lstat(p, &st) == 0 else { continue }
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    if prefix.hasPrefix(r + "/") || r.hasPrefix(prefix) || prefix.isEmpty { walk(p, r) }
                } else if r.hasPrefix(prefix) {
                    out.append(BackupObject(name: r, size: Int64(st.st_size)))
                }
            }
        }
        walk(root, "")
        return out
    }

    public func size(of name: String) throws -> Int64? {
        var st = stat()
        guard stat(try path(name), &st) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw BackupError.io(operation: "stat", path: try path(name), errno: errno)
        }
        return Int64(st.st_size)
    }

    public func read(_ name: String) throws -> [UInt8]? {
        let p = try path(name)
        guard Posix.exists(p) else { return nil }
        var out: [UInt8] = []
        try read(name) { out += $0 }
        return out
    }

    public func read(_ name: String, into body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let f = try PosixFile(path(name), flags: O_RDONLY)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        while true {
            let n = try f.read(into: buf)
            if n == 0 { break }
            try body(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
    }

    public func put(_ name: String, writer: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        _ = try path(name)
        let tmp = root + "/tmp/" + randomName() + ".partial"
        do {
            let f = try PosixFile(tmp, flags: O_WRONLY | O_CREAT | O_EXCL)
            try writer { try f.write($0) }
            try f.close()
        } catch {
            unlink(tmp)
            throw error
        }
        mutex.withLock { staged.append((name, tmp)) }
    }

    public func delete(_ name: String) throws {
        let p = try path(name)
        if unlink(p) != 0 && errno != ENOENT { throw BackupError.io(operation: "delete", path: p, errno: errno) }
        mutex.withLock { dirty = true }
    }

    public func commit() throws {
        let (batch, wasDirty) = mutex.withLock { () -> ([(name: String, path: String)], Bool) in
            defer { staged = []; dirty = false }
            return (staged, dirty)
        }
        guard !batch.isEmpty || wasDirty else { return }
        // 1. Every staged file's bytes durable before any of them gets its final name.
        if !batch.isEmpty { try Posix.syncFilesystem(root + "/tmp") }
        for s in batch {
            let final = try path(s.name)
            let parent = (final as NSString).deletingLastPathComponent
            if !Posix.isDirectory(parent) { try Posix.makeDirectories(parent, under: root) }
            guard rename(s.path, final) == 0 else { throw BackupError.io(operation: "rename", path: final, errno: errno) }
        }
        // 2. The new names (and deletions) durable.
        try Posix.syncFilesystem(root)
    }

    public func recover() throws {
        for name in Posix.list(root + "/tmp") where name != "lock" {
            unlink(root + "/tmp/" + name)
        }
        mutex.withLock { staged = [] }
    }

    private func randomName() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
    }
}

// MARK: File helpers: VaultIO's, with the backup's error type

extension BackupError {
    package init(_ failure: IOFailure) { self = .io(operation: failure.operation, path: failure.path, errno: failure.errno) }
}

/// VaultIO's descriptor with the backup's error type (one recipe for I/O in the whole product).
package final class PosixFile {
    private let descriptor: FileIO.Descriptor
    package var fd: Int32 { descriptor.fd }
    package var path: String { descriptor.path }

    package init(_ path: String, flags: Int32, mode: mode_t = 0o600) throws {
        do { descriptor = try FileIO.Descriptor.open(path, flags: flags, mode: mode) } catch { throw BackupError(error) }
    }

    package func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        do { return try descriptor.readFully(into: buffer) } catch { throw BackupError(error) }
    }

    package func write(_ buffer: UnsafeRawBufferPointer) throws {
        do { try descriptor.writeAll(buffer) } catch { throw BackupError(error) }
    }

    package func sync() throws {
        do { try descriptor.sync() } catch { throw BackupError(error) }
    }

    package func close() throws {
        do { try descriptor.close() } catch { throw BackupError(error) }
    }
}

/// VaultIO's file operations with the backup's error type.
package enum Posix {
    package static func exists(_ path: String) -> Bool { FileIO.exists(path) }
    package static func isDirectory(_ path: String) -> Bool { FileIO.isDirectory(path) }
    package static func list(_ path: String) -> [String] { FileIO.list(path) }

    package static func makeDirectory(_ path: String) throws {
        do { try FileIO.makeDirectory(path) } catch { throw BackupError(error) }
    }

    /// Makes `path` and any missing parents below `root`.
    package static func makeDirectories(_ path: String, under root: String) throws {
        if path.isEmpty || path == "/" || path == "." || path == root || isDirectory(path) { return }
        try makeDirectories((path as NSString).deletingLastPathComponent, under: root)
        try makeDirectory(path)
    }

    package static func syncFilesystem(_ path: String) throws {
        do { try FileIO.syncFilesystem(path) } catch { throw BackupError(error) }
    }

    /// Writes a small file atomically and durably (temp in the same directory, fsync, rename, fsync the directory).
    package static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        do { try FileIO.writeAtomically(bytes, to: path, tmpDirectory: (path as NSString).deletingLastPathComponent) } catch {
            throw BackupError(error)
        }
    }

    package static func readFile(_ path: String) throws -> [UInt8] {
        let f = try PosixFile(path, flags: O_RDONLY)
        var out: [UInt8] = []
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try f.read(into: buf)
            if n == 0 { break }
            out += UnsafeRawBufferPointer(rebasing: buf[0..<n])
        }
        try f.close()
        return out
    }
}
