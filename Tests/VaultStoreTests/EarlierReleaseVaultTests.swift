// A vault made by an earlier release must still open, verify, export byte-identically and take new
// imports. `Fixtures/vault-format2-r1.tar.gz` was made once, by the CLI at commit 3f255ab (before the
// engine was split into layers): `init --kdf interactive`, an import of 35 corpus files, `user add`,
// `token issue`, `forget` of one patient (6 instances), `key rotate`. Its expected.json lists every
// instance still in it with the SHA-256 of the original file. Never regenerate it with newer code.
import VaultKeys
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore

@Suite struct EarlierReleaseVaultTests {
    struct Expected: Decodable {
        struct Instance: Decodable { let sha256: String; let study: String; let size: Int }
        let passphrase: String
        let instances: [String: Instance]
    }

    static func fixture(_ name: String, _ ext: String) -> String {
        Bundle.module.path(forResource: name, ofType: ext, inDirectory: "Fixtures") ?? ""
    }

    /// The fixture vault, unpacked into a fresh directory (it is never opened in place).
    static func unpack(_ dir: TempDir) throws -> (root: String, expected: Expected) {
        let tar = try run("/bin/tar", ["-xzf", fixture("vault-format2-r1.tar", "gz"), "-C", dir.path])
        #expect(tar.status == 0, "tar: \(tar.stderr)")
        let data = try #require(FileManager.default.contents(atPath: fixture("vault-format2-r1.expected", "json")))
        return (dir.sub("v"), try JSONDecoder().decode(Expected.self, from: data))
    }

    @Test func opensVerifiesExportsAndImports() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (root, expected) = try Self.unpack(dir)
        let vault = try Vault.open(at: root, passphrase: try secure(expected.passphrase))
        #expect(vault.keyGeneration == 2)

        let before = try vault.verify()
        #expect(before.ok, "\(before.problems)")
        #expect(before.blobsChecked == expected.instances.count)
        #expect(vault.readAudit().report.ok)

        // Every instance comes back byte for byte.
        for study in Set(expected.instances.values.map(\.study)).sorted() {
            _ = try vault.export(.study(study), to: dir.sub("out"))
        }
        var exported: [String: String] = [:]
        for path in allFiles(under: dir.sub("out")) {
            let sop = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
            exported[sop] = try sha256(ofFile: path)
        }
        #expect(exported == expected.instances.mapValues(\.sha256))

        // The erased patient stays erased; the accounts made then still work.
        #expect(try vault.listUsers().map(\.name) == ["dr.fixture"])

        // New files import into it, and it still verifies, with a chain that goes on.
        let corpus = Corpus.shared
        let fresh = try #require(corpus.valid.first { $0.path.hasPrefix("patients/p03/") })
        try copyFile(corpus.path(fresh), dir.sub("input/new.dcm"))
        let summary = try vault.importFiles([dir.sub("input")])
        #expect(summary.count("imported") == 1)
        let after = try vault.verify()
        #expect(after.ok, "\(after.problems)")
        #expect(after.blobsChecked == expected.instances.count + 1)
        let log = vault.readAudit()
        #expect(log.report.ok, "\(log.report.problems)")
        #expect(log.records.last?.event.action == .importFiles)
    }

    @Test func refusesAWrongPassphrase() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (root, _) = try Self.unpack(dir)
        #expect(throws: VaultError.wrongPassphrase) { try Vault.open(at: root, passphrase: try secure("not the fixture passphrase")) }
    }
}
