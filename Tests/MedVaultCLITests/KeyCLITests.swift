import Foundation
import Testing
import TestSupport

/// The key life cycle through the CLI: passphrase change, slots, and rotations killed at every step.
@Suite struct KeyCLITests {
    let corpus = Corpus.shared

    struct Setup {
        let dir = TempDir()
        var env: [String: String]
        let recoveryFile: String
        init(corpus: Corpus) throws {
            env = medvaultEnvironment(vault: dir.sub("vault"))
            let created = try run(medvaultBinary, ["init", "--kdf", "interactive", "--json"], environment: env)
            let json = try JSONSerialization.jsonObject(with: Data(created.stdout.utf8)) as? [String: Any]
            recoveryFile = dir.sub("recovery.txt")
            try Data(((json?["recoveryKey"] as? String) ?? "").utf8).write(to: URL(fileURLWithPath: recoveryFile))
            let imported = try run(medvaultBinary, ["import"] + corpus.valid.prefix(12).map { corpus.path($0) }, environment: env)
            #expect(imported.status == 0, "\(imported.stderr)")
        }
        func mv(_ args: [String], extra: [String: String] = [:]) throws -> ProcessResult {
            try run(medvaultBinary, args, environment: env.merging(extra) { $1 })
        }
        var config: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.sub("vault/vault.json"))))) as? [String: Any] ?? [:]
        }
        /// sha256 of every file of the exported studies.
        func exportAll(_ studies: [String], _ name: String, extra: [String: String] = [:]) throws -> [String: String] {
            var out: [String: String] = [:]
            for s in studies {
                let r = try mv(["export", "--study", s, "--out", dir.sub(name)], extra: extra)
                #expect(r.status == 0, "\(r.stderr)")
            }
            for f in allFiles(under: dir.sub(name)) { out[(f as NSString).lastPathComponent] = try sha256(ofFile: f) }
            return out
        }
    }

    @Test func passphraseChangeAndSlotsFromTheCLI() throws {
        var s = try Setup(corpus: corpus)
        defer { s.dir.remove() }
        let changed = try s.mv(["passphrase", "change", "--kdf", "interactive"], extra: ["MEDVAULT_NEW_PASSPHRASE": "the new passphrase 2"])
        #expect(changed.status == 0, "\(changed.stderr)")
        #expect(try s.mv(["ls"]).status == 2)  // the old passphrase is gone
        s.env["MEDVAULT_PASSPHRASE"] = "the new passphrase 2"
        #expect(try s.mv(["ls"]).status == 0)

        let file = s.dir.sub("second.txt")
        try Data("second administrator\n".utf8).write(to: URL(fileURLWithPath: file))
        #expect(try s.mv(["key", "add-slot", "--label", "dr-b", "--new-passphrase-file", file, "--kdf", "interactive"]).status == 0)
        let listed = try s.mv(["key", "list", "--json"], extra: ["MEDVAULT_PASSPHRASE": "second administrator"])
        let slots = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        #expect(slots.map { $0["label"] as? String } == ["admin", "recovery", "dr-b"])
        #expect(slots.first { $0["current"] as? Bool == true }?["label"] as? String == "dr-b")
        let removeLast = try s.mv(["key", "remove-slot", "admin"], extra: ["MEDVAULT_PASSPHRASE": "second administrator"])
        #expect(removeLast.status == 0)
        let refused = try s.mv(["key", "remove-slot", "dr-b"], extra: ["MEDVAULT_PASSPHRASE": "second administrator"])
        #expect(refused.status == 2 && refused.stderr.contains("last passphrase slot"))
        // A new recovery key, printed once, opens the vault.
        let added = try s.mv(["key", "add-recovery", "--json"], extra: ["MEDVAULT_PASSPHRASE": "second administrator"])
        let newKey = try #require((try JSONSerialization.jsonObject(with: Data(added.stdout.utf8)) as? [String: Any])?["recoveryKey"] as? String)
        try Data(newKey.utf8).write(to: URL(fileURLWithPath: s.dir.sub("new-recovery.txt")))
        #expect(try s.mv(["ls", "--recovery-key-file", s.dir.sub("new-recovery.txt")]).status == 0)
        let log = try s.mv(["audit", "show", "--json"], extra: ["MEDVAULT_PASSPHRASE": "second administrator"])
        #expect(log.stdout.contains("key.passphrase-change") && log.stdout.contains("key.add-slot") && log.stdout.contains("key.remove-slot"))
        #expect(log.stdout.contains("key.add-recovery") && !log.stdout.contains(newKey))
        #expect(!log.stdout.contains("second administrator") && !log.stdout.contains("the new passphrase 2"))
    }

    /// `key rotate` SIGKILLed at each of its steps: the vault opens (passphrase and recovery key),
    /// verifies, and exports the same bytes; the next rotation completes.
    @Test func rotationKilledAtEveryStepLeavesAVaultThatOpensAndVerifies() throws {
        let s = try Setup(corpus: corpus)
        defer { s.dir.remove() }
        let studies = Array(Set(corpus.valid.prefix(12).compactMap(\.study_uid)))
        let original = try s.exportAll(studies, "original")
        #expect(!original.isEmpty)
        var generation = 1
        for (i, point) in ["rotate.pending-written", "rotate.before-commit", "rotate.committed", "rotate.finished"].enumerated() {
            let killed = try s.mv(["key", "rotate"], extra: ["MEDVAULT_FAULT": point])
            #expect(killed.status == SIGKILL, "\(point): \(killed.status) \(killed.stderr)")
            // Pending state is left in vault.json only when the process died between the steps…
            #expect((s.config["pendingKeyGeneration"] as? Int != nil) == (point != "rotate.finished"), "\(point)")
            // Committed or not decides which key is in force; either way the vault is whole.
            if point == "rotate.committed" || point == "rotate.finished" { generation += 1 }
            let verify = try s.mv(["verify", "--json"])
            #expect(verify.status == 0, "\(point): \(verify.stdout) \(verify.stderr)")
            let byRecovery = try s.mv(["verify", "--recovery-key-file", s.recoveryFile], extra: ["MEDVAULT_PASSPHRASE": "wrong"])
            #expect(byRecovery.status == 0, "\(point): \(byRecovery.stderr)")
            #expect(try s.exportAll(studies, "after-\(i)") == original, "\(point)")
            #expect(try s.mv(["audit", "verify"]).status == 0)
            // …and the first open settles it: one key in vault.json, the one the catalog uses, so that
            // backup snapshots (signed with the seed that key wraps) can be published again.
            #expect(s.config["pendingKeyGeneration"] == nil && s.config["pendingWrappedManifestSigningSeed"] == nil, "\(point)")
            #expect(s.config["keyGeneration"] as? Int == generation, "\(point)")
            let published = try s.mv(["backup", "publish"])
            #expect(published.status == 0, "\(point): \(published.stderr)")
        }
        let finish = try s.mv(["key", "rotate"])
        #expect(finish.status == 0, "\(finish.stderr)")
        generation += 1
        #expect(s.config["keyGeneration"] as? Int == generation)
        #expect(s.config["pendingKeyGeneration"] == nil)
        #expect(try s.mv(["verify"]).status == 0)
        #expect(try s.exportAll(studies, "final") == original)
        let log = try s.mv(["audit", "show", "--json"])
        #expect(log.stdout.contains("key.rotate"))

        // The backup follows the rotation: a keyless sync, a verify against the same public key, and a
        // restore opened with the recovery key printed at `init`.
        var job = s.env
        job.removeValue(forKey: "MEDVAULT_PASSPHRASE")
        job["XDG_STATE_HOME"] = s.dir.sub("state")
        let dest = s.dir.sub("backup")
        let synced = try run(medvaultBinary, ["backup", "sync", "--to", dest], environment: job)
        #expect(synced.status == 0, "\(synced.stderr)")
        #expect(try run(medvaultBinary, ["backup", "verify", dest], environment: job).status == 0)
        let restored = s.dir.sub("restored")
        let r = try s.mv(["backup", "restore", "--from", dest, "--to", restored, "--recovery-key-file", s.recoveryFile])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(try s.exportAll(studies, "restored-export", extra: ["MEDVAULT_VAULT": restored]) == original)
    }
}
