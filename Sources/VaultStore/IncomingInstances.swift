// DICOM instances that arrive over a connection (STOW-RS now, C-STORE later) rather than as files.
// Each is held in an anonymous in-memory file (memfd) until the importer seals it, so its clear bytes
// never touch a filesystem: not vault/tmp, not /tmp. The importer then reads it through
// /proc/self/fd like any file, in one change (audited, published as a snapshot). Memory grows with
// the instances of one request, which the caller bounds (docs/api.md, "STOW-RS").
import CSysShim
import Foundation
public import VaultIO
#if canImport(Glibc)
import Glibc
#endif

/// One received instance, in memory. Append its bytes as they arrive, then import it with
/// `Vault.importIncoming`. Closing (deinit) frees the memory.
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

    let descriptor: FileIO.Descriptor
    public private(set) var size: Int64 = 0
    public let maxBytes: Int64

    public init(maxBytes: Int64) throws(Failure) {
        let fd = mv_sys_memfd("medvault-incoming")
        guard fd >= 0 else { throw .io(IOFailure(operation: "create an in-memory file for", path: "an incoming instance", errno: errno)) }
        descriptor = FileIO.Descriptor(fd: fd, path: "an incoming instance")
        self.maxBytes = maxBytes
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
        guard size + Int64(bytes.count) <= maxBytes else { throw .tooLarge(maxBytes: maxBytes) }
        do { try descriptor.writeAll(bytes) } catch { throw .io(error) }
        size += Int64(bytes.count)
    }

    /// The path the importer opens (a new descriptor on the same memory).
    var path: String { "/proc/self/fd/\(descriptor.fd)" }

    deinit { try? descriptor.close() }
}

extension Vault {
    /// Imports received instances as one change by `actor` (audited, then published as a snapshot),
    /// exactly as `importFiles` imports files. The results are in the order of `instances`.
    public func importIncoming(
        _ instances: [IncomingInstance], options: ImportOptions = ImportOptions(), by actor: AuditActor, onWait: () -> Void = {}
    ) throws -> ImportSummary {
        var options = options
        options.removeSource = false  // a memfd is not the user's original
        return try importFiles(sources: instances.map { (path: $0.path, size: $0.size) }, inputErrors: [], options: options, by: actor, onWait: onWait)
    }
}
