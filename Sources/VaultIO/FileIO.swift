// POSIX file helpers: the one recipe for durable writes (temp file → write → fsync → rename →
// fsync directory), reads that retry on EINTR, and an advisory lock for writers.
import Foundation
import VaultCrypto
import CSysShim
#if canImport(Glibc)
package import Glibc
#endif

/// An I/O failure with the operation and the OS reason. Paths inside a vault are random ids, so
/// naming them leaks nothing.
public struct IOFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var isDiskFull: Bool { errno == ENOSPC || errno == EDQUOT }
    public var description: String {
        let reason = String(cString: strerror(errno))
        if isDiskFull { return "\(operation) \(path): the disk is full (\(reason)); free space and run the command again" }
        return "\(operation) \(path): \(reason)"
    }
}

package enum FileIO {
    package static func failure(_ op: String, _ path: String) -> IOFailure {
        IOFailure(operation: op, path: path, errno: Glibc.errno)
    }

    /// Clear bytes read in order, to the end: a file, or a received instance decrypted as it is read.
    package protocol SequentialSource: AnyObject, Sendable {
        /// Fills `buffer` as far as the data goes; returns the bytes read (fewer only at the end).
        func readFully(into buffer: UnsafeMutableRawBufferPointer) throws(IOFailure) -> Int
    }

    /// A file descriptor with exactly one owner; closed on deinit. Sendable so that an import job can
    /// hand it to the worker that encrypts it; only one thread uses it at a time.
    package final class Descriptor: SequentialSource, @unchecked Sendable {
        package let fd: Int32
        package let path: String
        private var closed = false

        package init(fd: Int32, path: String) {
            self.fd = fd
            self.path = path
        }

        package static func open(_ path: String, flags: Int32, mode: mode_t = 0o600) throws(IOFailure) -> Descriptor {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            guard fd >= 0 else { throw FileIO.failure("open", path) }
            return Descriptor(fd: fd, path: path)
        }

        /// Reads until `buffer` is full or end of file; returns bytes read.
        package func readFully(into buffer: UnsafeMutableRawBufferPointer) throws(IOFailure) -> Int {
            try fill(buffer) { at, count, _ in Glibc.read(fd, at, count) }
        }

        /// A new file in `directory` that has no name: nothing else can open it, and it is gone when
        /// closed or when the process dies. Where the filesystem has no O_TMPFILE, a file with a random
        /// name is created and unlinked at once.
        package static func openUnnamed(inDirectory directory: String) throws(IOFailure) -> Descriptor {
            let fd = mv_sys_open_unnamed(directory)
            if fd >= 0 { return Descriptor(fd: fd, path: directory + "/(unnamed)") }
            guard Glibc.errno == EOPNOTSUPP || Glibc.errno == EISDIR else { throw FileIO.failure("create an unnamed file in", directory) }
            let path = directory + "/" + FileIO.randomHex(16) + ".unnamed"
            let named = try open(path, flags: O_RDWR | O_CREAT | O_EXCL)
            try FileIO.unlink(path)
            return Descriptor(fd: named.release(), path: directory + "/(unnamed)")
        }

        /// Gives up ownership: the caller closes the returned descriptor.
        private func release() -> Int32 {
            closed = true
            return fd
        }

        /// Calls `read(destination, count, bytesSoFar)` until `buffer` is full or it returns 0 (end of
        /// file), retrying on EINTR; returns the bytes read.
        private func fill(
            _ buffer: UnsafeMutableRawBufferPointer, _ read: (UnsafeMutableRawPointer, Int, Int) -> Int
        ) throws(IOFailure) -> Int {
            guard let base = buffer.baseAddress else { return 0 }
            var total = 0
            while total < buffer.count {
                let n = read(base + total, buffer.count - total, total)
                if n < 0 {
                    if Glibc.errno == EINTR { continue }
                    throw FileIO.failure("read", path)
                }
                if n == 0 { break }
                total += n
            }
            return total
        }

        package func writeAll(_ buffer: UnsafeRawBufferPointer) throws(IOFailure) {
            var done = 0
            while done < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 {
                    if Glibc.errno == EINTR { continue }
                    throw FileIO.failure("write", path)
                }
                done += n
            }
        }

        package func writeAll(_ bytes: [UInt8]) throws(IOFailure) {
            let result: Result<Void, IOFailure> = bytes.withUnsafeBytes { b in
                do throws(IOFailure) { try writeAll(b); return .success(()) } catch { return .failure(error) }
            }
            try result.get()
        }

        package func sync() throws(IOFailure) {
            guard fsync(fd) == 0 else { throw FileIO.failure("fsync", path) }
        }

        /// fdatasync: the data and the metadata needed to read it back (the size), not timestamps.
        package func dataSync() throws(IOFailure) {
            guard fdatasync(fd) == 0 else { throw FileIO.failure("fdatasync", path) }
        }

        /// Reads at `offset` (the file position does not move) until `buffer` is full or end of file;
        /// returns bytes read.
        package func readFully(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(IOFailure) -> Int {
            try fill(buffer) { at, count, done in Glibc.pread(fd, at, count, off_t(offset) + off_t(done)) }
        }

        package func writeAll(_ bytes: [UInt8], at offset: Int64) throws(IOFailure) {
            let n = bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard n == bytes.count else { throw FileIO.failure("write", path) }
        }

        package func size() throws(IOFailure) -> Int64 {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw FileIO.failure("stat", path) }
            return Int64(st.st_size)
        }

        package func close() throws(IOFailure) {
            guard !closed else { return }
            closed = true
            guard Glibc.close(fd) == 0 else { throw FileIO.failure("close", path) }
        }

        deinit { if !closed { _ = Glibc.close(fd) } }
    }

    package static func fsyncDirectory(_ path: String) throws(IOFailure) {
        let d = try Descriptor.open(path, flags: O_RDONLY | O_DIRECTORY)
        try d.sync()
        try d.close()
    }

    /// Makes everything written to the filesystem holding `path` durable: file data, new names, the
    /// journal. One call per group commit replaces an fsync per file and per directory.
    package static func syncFilesystem(_ path: String) throws(IOFailure) {
        let d = try Descriptor.open(path, flags: O_RDONLY | O_DIRECTORY)
        guard mv_sys_syncfs(d.fd) == 0 else { throw failure("syncfs", path) }
        try d.close()
    }

    package static func rename(_ from: String, _ to: String) throws(IOFailure) {
        guard Glibc.rename(from, to) == 0 else { throw failure("rename", to) }
    }

    package static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(IOFailure) {
        if mkdir(path, mode) != 0 && Glibc.errno != EEXIST { throw failure("mkdir", path) }
    }

    package static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    package static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    package static func fileSize(_ path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_size)
    }

    package static func unlink(_ path: String) throws(IOFailure) {
        if Glibc.unlink(path) != 0 && Glibc.errno != ENOENT { throw failure("unlink", path) }
    }

    /// Names in a directory (no "." / ".."), or [] if it does not exist.
    package static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Writes `bytes` to `path` atomically and durably.
    /// `syncDirectory: false` leaves the rename's durability to the filesystem: after a power loss the
    /// path holds the old bytes or the new ones, both complete.
    package static func writeAtomically(_ bytes: [UInt8], to path: String, tmpDirectory: String, mode: mode_t = 0o600, syncDirectory: Bool = true) throws(IOFailure) {
        let tmp = tmpDirectory + "/" + randomHex(16) + ".tmp"
        do {
            let d = try Descriptor.open(tmp, flags: O_WRONLY | O_CREAT | O_EXCL, mode: mode)
            try d.writeAll(bytes)
            try d.sync()
            try d.close()
            try rename(tmp, path)
            if syncDirectory { try fsyncDirectory((path as NSString).deletingLastPathComponent) }
        } catch {
            _ = Glibc.unlink(tmp)
            throw error
        }
    }

    package static func randomHex(_ byteCount: Int) -> String {
        hex(secureRandomBytes(byteCount))
    }
}

/// Lowercase hexadecimal.
package func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

package func unhex(_ s: String) -> [UInt8]? {
    let u = Array(s.utf8)
    guard u.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(u.count / 2)
    func v(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 97...102: c - 87
        case 65...70: c - 55
        default: nil
        }
    }
    var i = 0
    while i < u.count {
        guard let hi = v(u[i]), let lo = v(u[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}

/// An exclusive advisory lock (flock) on `vault/lock`, held by every process that writes blobs.
/// The kernel drops it when the process dies, so a crash never leaves the vault locked.
package final class WriterLock {
    private let descriptor: FileIO.Descriptor

    /// Takes the lock; if another process holds it, calls `onWait` once and then blocks.
    package init(path: String, onWait: () -> Void) throws(IOFailure) {
        descriptor = try FileIO.Descriptor.open(path, flags: O_RDWR | O_CREAT, mode: 0o600)
        if flock(descriptor.fd, LOCK_EX | LOCK_NB) != 0 {
            guard Glibc.errno == EWOULDBLOCK else { throw FileIO.failure("lock", path) }
            onWait()
            while flock(descriptor.fd, LOCK_EX) != 0 {
                if Glibc.errno != EINTR { throw FileIO.failure("lock", path) }
            }
        }
    }

    private init(descriptor: FileIO.Descriptor) { self.descriptor = descriptor }

    /// Takes the lock only if it is free now; nil if another process holds it.
    package static func attempt(path: String) throws(IOFailure) -> WriterLock? {
        let d = try FileIO.Descriptor.open(path, flags: O_RDWR | O_CREAT, mode: 0o600)
        if flock(d.fd, LOCK_EX | LOCK_NB) == 0 { return WriterLock(descriptor: d) }
        guard Glibc.errno == EWOULDBLOCK else { throw FileIO.failure("lock", path) }
        try? d.close()
        return nil
    }

    deinit { _ = flock(descriptor.fd, LOCK_UN) }
}
