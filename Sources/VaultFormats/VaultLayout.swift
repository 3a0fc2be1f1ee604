// The vault directory's layout: one place for every path name.

/// Paths inside a vault directory.
public struct VaultLayout: Sendable {
    public let root: String
    public init(root: String) {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
    }
    public var config: String { root + "/vault.json" }
    public var catalog: String { root + "/catalog.sqlite" }
    public var blobs: String { root + "/blobs" }
    public var tmp: String { root + "/tmp" }
    public var lock: String { root + "/lock" }
    public var audit: String { root + "/audit" }
    public var snapshots: String { root + "/snapshots" }
    public var run: String { root + "/run" }
    package func blob(_ id: BlobID) -> String { root + "/" + id.relativePath }
}

