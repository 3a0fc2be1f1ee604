// The server's in-memory search index: every study's decrypted summary (patient, study, modalities,
// counts), so that a search by name, date, description or modality filters memory instead of
// decrypting the catalog on each request. Built on first use, rebuilt after any commit to the catalog
// (this process's or another's: `CatalogChangeWatcher`). Memory grows with the number of studies,
// never with blob bytes. What it holds in clear, and for how long: docs/threat-model.md, "The
// server's search index".
import Foundation
import VaultCatalog

public final class StudySearchIndex: @unchecked Sendable {
    private let vault: Vault
    private let watcher: CatalogChangeWatcher
    /// Guards `studies` and `version`; held while rebuilding, so that concurrent searches after a
    /// change wait for one rebuild instead of each doing their own.
    private let lock = NSLock()
    private var studies: [StudySummary] = []
    private var version: Int?
    /// Rebuilds so far (for tests and `tools/bench-serve`).
    public private(set) var rebuilds = 0

    init(vault: Vault) throws {
        self.vault = vault
        watcher = try vault.catalog.changeWatcher()
    }

    /// Every study in the vault, as `Vault.listStudies()` lists them, current as of this call.
    public func allStudies() throws -> [StudySummary] {
        lock.lock()
        defer { lock.unlock() }
        // The version is read before the listing: a commit in between makes the next call rebuild again.
        let now = try watcher.version()
        if version != now {
            studies = try vault.listStudies(in: .all)
            version = now
            rebuilds += 1
        }
        return studies
    }
}

extension Vault {
    /// A search index over this vault's studies (`StudySearchIndex`); one per server.
    public func makeStudySearchIndex() throws -> StudySearchIndex { try StudySearchIndex(vault: self) }
}
