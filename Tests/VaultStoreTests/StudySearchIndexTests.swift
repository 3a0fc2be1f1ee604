// The server's in-memory study index: the same studies as a catalog listing, rebuilt exactly when a
// commit (this process's or another's) changed the catalog, and not otherwise.
import Foundation
import Testing
import TestSupport
@testable import VaultStore

@Suite struct StudySearchIndexTests {
    static func uids(_ s: [StudySummary]) -> [String] { s.map(\.study.studyUID) }

    @Test func theIndexFollowsCommitsOfAnyProcessAndRebuildsOnlyAfterThem() throws {
        let dir = TempDir("medvault-search-index")
        let vault = try makeVault(dir).vault
        let valid = Corpus.shared.valid
        try importFiles(Array(valid.prefix(valid.count / 2)), into: vault, dir: dir, batch: "a")
        let index = try vault.makeStudySearchIndex()
        #expect(Self.uids(try index.allStudies()) == Self.uids(try vault.listStudies()))
        #expect(index.rebuilds == 1)
        // Nothing committed: no rebuild, however many searches.
        for _ in 0..<5 { _ = try index.allStudies() }
        #expect(index.rebuilds == 1)
        // Another process's import (a second vault value: its own catalog connections) is seen.
        let other = try Vault.open(at: vault.layout.root, passphrase: try secure(testPassphrase))
        try importFiles(Array(valid.suffix(valid.count - valid.count / 2)), into: other, dir: dir, batch: "b")
        let after = try index.allStudies()
        #expect(Self.uids(after) == Self.uids(try vault.listStudies()))
        #expect(after.count > 0 && index.rebuilds == 2)
        #expect(after.map(\.instances).reduce(0, +) == valid.count)
        // A forgotten patient leaves the index with the next search.
        let pid = try #require(after.first { !$0.patient.patientID.isEmpty }?.patient.patientID)
        _ = try other.forget(patientID: pid)
        let forgotten = try index.allStudies()
        #expect(!forgotten.contains { $0.patient.patientID == pid })
        #expect(Self.uids(forgotten) == Self.uids(try vault.listStudies()))
    }
}
