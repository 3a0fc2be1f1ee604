// DICOM instances that arrive over a connection (STOW-RS now, C-STORE later) rather than as files.
// A small one is held in an anonymous in-memory file (memfd), which the importer reads through
// /proc/self/fd like any file; one past the caller's memory limit is sealed as it arrives
// (`SealedSpill`) and read back through the spill. Clear bytes never touch a filesystem, and memory
// does not grow with an instance's size (docs/api.md, "STOW-RS").
import CSysShim
import Foundation
public import VaultIO
import VaultFormats
#if canImport(Glibc)
import Glibc
#endif

/// One received instance. Append its bytes as they arrive, `finish`, then import it with
/// `Vault.importIncoming`. Up to `memoryLimit` bytes it is held in memory (a memfd); past that, all of
/// it moves into a `SealedSpill`: sealed in an unnamed file in the vault's tmp directory, under a key
/// only this process holds. Either way no clear byte reaches a file, and memory stays within
/// `memoryLimit` whatever the instance's size. Closing (deinit) frees both.
public final class IncomingInstance: @unchecked Sendable {
    /// Why an instance could not be received.
    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// More than `maxBytes`.
        case tooLarge(maxBytes: Int64)
        case io(IOFailure)

        public var description: String {
            switch self {
            case .tooLarge(let max): "the instance is larger than the limit of \(max) bytes"
            case .io(let e): e.description
            }
        }
    }

    private var memory: FileIO.Descriptor?
    private(set) var spill: SealedSpill?
    private let spillDirectory: String
    public private(set) var size: Int64 = 0
    public let maxBytes: Int64
    public let memoryLimit: Int64

    /// An empty instance of at most `maxBytes`, in memory up to `memoryLimit` bytes and sealed in
    /// `vault`'s tmp directory past that.
    public init(maxBytes: Int64, memoryLimit: Int64, spillingInto vault: Vault) throws(Failure) {
        let fd = mv_sys_memfd("medvault-incoming")
        guard fd >= 0 else { throw .io(IOFailure(operation: "create an in-memory file for", path: "an incoming instance", errno: errno)) }
        memory = FileIO.Descriptor(fd: fd, path: "an incoming instance")
        self.maxBytes = maxBytes
        self.memoryLimit = max(0, memoryLimit)
        spillDirectory = vault.layout.tmp
    }

    /// Bytes held in memory now (0 once sealed in a spill).
    public var memoryBytes: Int64 { spill == nil ? size : 0 }
    /// Whether it outgrew `memoryLimit` and is sealed on disk.
    public var isSealedOnDisk: Bool { spill != nil }

    public func append(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
        guard size + Int64(bytes.count) <= maxBytes else { throw .tooLarge(maxBytes: maxBytes) }
        do {
            if let memory, size + Int64(bytes.count) > memoryLimit {
                spill = try Self.seal(memory, size: size, into: spillDirectory)
                try memory.close()
                self.memory = nil
            }
            if let spill { try spill.append(bytes) } else if let memory { try memory.writeAll(bytes) }
        } catch { throw .io(error) }
        size += Int64(bytes.count)
    }

    /// The instance is complete (its last bytes are sealed, if it is in a spill).
    public func finish() throws(Failure) {
        do { try spill?.finish() } catch { throw .io(error) }
    }

    /// Moves what `memory` holds into a new spill.
    private static func seal(_ memory: FileIO.Descriptor, size: Int64, into directory: String) throws(IOFailure) -> SealedSpill {
        let spill = try SealedSpill(directory: directory)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)  // a patient's clear bytes
            buffer.deallocate()
        }
        var offset: Int64 = 0
        while offset < size {
            let n = try memory.readFully(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(buffer.count), size - offset))]))
            guard n > 0 else { throw IOFailure(operation: "read", path: "an incoming instance", errno: EIO) }
            try spill.append(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += Int64(n)
        }
        return spill
    }

    /// What the importer reads: the memfd through /proc/self/fd, or the spill.
    var importSource: ImportSource {
        if let spill { return ImportSource(path: "a received instance", size: size, spill: spill) }
        return ImportSource(path: "/proc/self/fd/\(memory?.fd ?? -1)", size: size, spill: nil)
    }

    deinit { try? memory?.close() }
}

/// One input of an import: a file (`path`), or a received instance sealed in a spill.
struct ImportSource {
    let path: String
    let size: Int64
    let spill: SealedSpill?
}

extension Vault {
    /// Imports received instances (each `finish`ed) as one change by `actor` (audited, then published as a snapshot),
    /// exactly as `importFiles` imports files. The results are in the order of `instances`.
    public func importIncoming(
        _ instances: [IncomingInstance], options: ImportOptions = ImportOptions(), by actor: AuditActor, onWait: () -> Void = {}
    ) throws -> ImportSummary {
        var options = options
        options.removeSource = false  // a memfd is not the user's original
        return try importFiles(sources: instances.map(\.importSource), inputErrors: [], options: options, by: actor, onWait: onWait)
    }
}
