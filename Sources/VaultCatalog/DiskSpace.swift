import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// Telling a full disk from a failing one. SQLite reports a full filesystem as "disk I/O error"
/// (SQLITE_IOERR) when the failing write is not a plain `write(2)` — extending the WAL index
/// (`catalog.sqlite-shm`), for instance — so its message alone would send the operator looking for a
/// broken disk (issue 10, 9d).
public enum DiskSpace {
    /// Bytes available to this user on the filesystem holding `path` (its nearest existing ancestor),
    /// or nil if it cannot be told.
    public static func available(at path: String) -> Int64? {
        var candidate = path
        while !candidate.isEmpty {
            var st = statvfs()
            if statvfs(candidate, &st) == 0 { return Int64(st.f_bavail) * Int64(st.f_frsize) }
            let parent = (candidate as NSString).deletingLastPathComponent
            if parent == candidate { break }
            candidate = parent
        }
        return nil
    }

    /// If `error` is SQLite failing to write (SQLITE_FULL, or SQLITE_IOERR while the vault's filesystem
    /// has next to no space left), the explanation to show instead of SQLite's message; else nil.
    public static func fullDiskExplanation(for error: any Error, vaultPath: String?) -> String? {
        let text = String(describing: error)
        let sqliteFull = (error as? DatabaseError)?.resultCode == .SQLITE_FULL || text.contains("SQLite error 13")
        let sqliteIO = (error as? DatabaseError)?.resultCode == .SQLITE_IOERR || text.contains("SQLite error 10")
        guard sqliteFull || sqliteIO else { return nil }
        let free = vaultPath.flatMap { available(at: $0) }
        // 1 MiB: less than SQLite needs to grow the WAL and its index by a page or two of each.
        guard sqliteFull || (free.map { $0 < 1 << 20 } ?? false) else { return nil }
        let place = vaultPath.map { " holding \($0)" } ?? ""
        let left = free.map { " (\($0) bytes left)" } ?? ""
        return "the disk\(place) is full\(left): the catalog cannot be written; free space and run the command again"
    }
}
