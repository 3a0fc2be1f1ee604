// `medvault backup sync|verify|restore|publish`. Sync and verify take no passphrase: they work from
// the vault's signed manifests and public key alone. See docs/backup.md.
import VaultFormats
import ArgumentParser
import Foundation
import VaultBackup
import VaultRestore
import VaultCrypto
import VaultStore

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Back up a vault without any key, check a backup, restore a vault from one.",
        discussion: """
            The vault writes a sealed catalog snapshot and a signed manifest after every change. `sync` copies
            them and the encrypted blobs they list, with no passphrase; `verify` checks a backup with the public
            key only; `restore` rebuilds a vault that opens with the original passphrase or recovery key.
            """,
        subcommands: [Sync.self, VerifyBackup.self, Restore.self, Publish.self])

    struct Sync: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the vault's newest snapshot and new blobs to a backup; needs no passphrase.",
            discussion: """
                Copies what the newest signed manifest lists and is missing at DEST (durably, resumable after
                any interruption: run it again), then deletes at DEST the blobs the manifest no longer lists and
                snapshot sets beyond the newest --keep. Never decrypts anything; never opens the catalog.
                Exit status: 0 done; 1 done, but the vault's newest snapshot is older than its catalog (the
                backup lacks the newest changes: publish, then sync again); 2 could not run (the message says why).
                """)

        @Option(name: .long, help: ArgumentHelp("The vault directory (or set MEDVAULT_VAULT).", valueName: "dir"))
        var vault: String?
        @Option(name: .long, help: ArgumentHelp("The backup directory (created if needed).", valueName: "dest"))
        var to: String
        @Option(help: "Snapshot sets to keep at the destination.") var keep = 3
        @Flag(help: "Re-read every blob already at the destination and copy damaged ones again.") var rehash = false
        @Option(help: ArgumentHelp("Files per commit at the destination (fewer: less work lost to an interruption).", valueName: "n"))
        var batchFiles = 256
        @Option(help: ArgumentHelp("Rollback-detection state file (default: ~/.local/state/medvault/backup-state.json).", valueName: "file"))
        var state: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws {
            if keep < 1 { throw ValidationError("--keep must be at least 1") }
            if batchFiles < 1 { throw ValidationError("--batch-files must be at least 1") }
        }

        func run() throws {
            try MedVault.guarded {
                let root = try vaultDirectory(vault)
                let target = try DirectoryTarget(root: to, locking: .exclusive)
                let bar = ProgressBar(label: "sync")
                var options = SyncOptions(keep: keep, rehash: rehash)
                options.batchFiles = batchFiles
                let report = try BackupSync.run(
                    vault: root, to: target, options: options,
                    state: BackupStateFile(path: state ?? BackupStateFile.defaultPath)
                ) { p in bar.update(done: p.filesDone, total: p.filesTotal, bytes: p.bytesDone, totalBytes: p.bytesTotal) }
                bar.finish()
                if json {
                    Console.json([
                        "sequence": report.sequence, "blobs": report.blobsListed, "copied": report.blobsCopied,
                        "bytesCopied": report.bytesCopied, "alreadyPresent": report.blobsAlreadyPresent, "repaired": report.blobsRepaired,
                        "deleted": report.blobsDeleted, "snapshotsDeleted": report.snapshotsDeleted, "seconds": report.seconds,
                        "stale": report.stale != nil,
                    ])
                } else {
                    let rate = report.seconds > 0 ? Double(report.bytesCopied) / report.seconds : 0
                    var line = "snapshot \(report.sequence): \(report.blobsListed) blobs; copied \(report.blobsCopied)"
                    line += " (\(Format.megabytes(report.bytesCopied)), \(Format.megabytes(Int64(rate)))/s), already present \(report.blobsAlreadyPresent)"
                    if report.blobsRepaired > 0 { line += ", repaired \(report.blobsRepaired)" }
                    line += ", deleted \(report.blobsDeleted)"
                    if report.snapshotsDeleted > 0 { line += "; pruned \(report.snapshotsDeleted) old snapshot(s)" }
                    print(line)
                }
                if let s = report.stale {
                    Console.error(
                        "medvault: warning: the vault's newest snapshot is stale (catalog generation \(s.catalog), snapshot \(s.snapshot.map(String.init) ?? "unknown")): "
                            + "the vault committed changes it has not published, and this backup lacks them; run `medvault backup publish` "
                            + "(or any import) on the vault, then sync again")
                    throw ExitCode(1)
                }
            }
        }
    }

    struct VerifyBackup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check a backup with the public key only: signature, then every file's size and hash.",
            discussion: """
                Names every missing, extra, truncated or altered file, and refuses a manifest older than the newest
                one seen before for this backup (rollback). The public key comes from the vault's vault.json
                (--vault) or is given (--public-key, base64, as `manifestPublicKey` in vault.json).
                Exit status: 0 intact; 1 problems found; 2 could not run.
                """)

        @Argument(help: ArgumentHelp("The backup directory.", valueName: "dest")) var destination: String
        @Option(name: .long, help: ArgumentHelp("Take the public key from this vault's vault.json.", valueName: "dir"))
        var vault: String?
        @Option(name: .long, help: ArgumentHelp("The manifest public key (base64).", valueName: "key")) var publicKey: String?
        @Option(help: ArgumentHelp("Rollback-detection state file (default: ~/.local/state/medvault/backup-state.json).", valueName: "file"))
        var state: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws {
            if (vault == nil) == (publicKey == nil) && ProcessInfo.processInfo.environment["MEDVAULT_VAULT"] == nil {
                throw ValidationError("give --vault DIR or --public-key KEY")
            }
        }

        func run() throws {
            try MedVault.guarded {
                let key: Ed25519PublicKey
                if let publicKey {
                    guard let k = Ed25519PublicKey(base64: publicKey) else { throw CLIError("--public-key is not a base64 Ed25519 public key") }
                    key = k
                } else {
                    let root = try vaultDirectory(vault)
                    guard let k = try VaultPublicInfo.load(vault: root).manifestPublicKey else {
                        throw SnapshotError.noPublicKey(VaultLayout(root: root).config)
                    }
                    key = k
                }
                let target = try DirectoryTarget(root: destination, locking: .shared)
                let bar = ProgressBar(label: "verify")
                let report = try BackupVerifier.run(target, publicKey: key, state: BackupStateFile(path: state ?? BackupStateFile.defaultPath)) { p in
                    bar.update(done: p.filesDone, total: p.filesTotal, bytes: p.bytesDone, totalBytes: p.bytesTotal)
                }
                bar.finish()
                if json {
                    Console.json([
                        "ok": report.ok, "sequence": report.sequence, "createdAt": report.createdAt, "blobs": report.blobs,
                        "filesChecked": report.filesChecked, "bytesChecked": report.bytesChecked,
                        "problems": report.problems.map { ["kind": $0.kind.rawValue, "name": $0.name, "detail": $0.detail] },
                    ])
                } else {
                    for p in report.problems { print(p.description) }
                    var line = report.ok ? "OK" : "FAILED: \(report.problems.count) problem(s)"
                    line += ": snapshot \(report.sequence) of \(report.createdAt); \(report.filesChecked) files (\(Format.megabytes(report.bytesChecked))) verified"
                    print(line)
                }
                if !report.ok { throw ExitCode(1) }
            }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rebuild a vault from a backup into a new directory, then verify it.",
            discussion: """
                Checks every file against the signed manifest while copying, decrypts the catalog snapshot with the
                passphrase (or --recovery-key-file) of the vault as it was backed up, then runs `medvault verify`
                on the result. Exit status: 0 restored and verified; 1 restored with problems (listed); 2 could not run.
                """)

        @Option(name: .long, help: ArgumentHelp("The backup directory.", valueName: "dest")) var from: String
        @Option(name: .long, help: ArgumentHelp("The new vault directory (must not exist, or be empty).", valueName: "dir")) var to: String
        @Option(name: .long, help: ArgumentHelp("Check the manifest with this public key (base64) too.", valueName: "key")) var publicKey: String?
        @Option(help: ArgumentHelp("Restore this snapshot sequence instead of the newest.", valueName: "n")) var sequence: UInt64?
        @Option(name: .long, help: ArgumentHelp("Read the passphrase from this file (first line).", valueName: "file"))
        var passphraseFile: String?
        @Option(name: .long, help: ArgumentHelp("Read the passphrase from this open file descriptor.", valueName: "n"))
        var passphraseFd: Int32?
        @Option(name: .long, help: ArgumentHelp("Unlock with the recovery key in this file instead of a passphrase.", valueName: "file"))
        var recoveryKeyFile: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                var key: Ed25519PublicKey?
                if let publicKey {
                    guard let k = Ed25519PublicKey(base64: publicKey) else { throw CLIError("--public-key is not a base64 Ed25519 public key") }
                    key = k
                }
                let unlock: VaultUnlock
                if let recoveryKeyFile {
                    guard let data = FileManager.default.contents(atPath: recoveryKeyFile) else {
                        throw CLIError("cannot read recovery key file \(recoveryKeyFile)")
                    }
                    unlock = .recoveryKey(String(decoding: data, as: UTF8.self))
                } else {
                    unlock = .passphrase(try PassphraseSource.read(file: passphraseFile, fd: passphraseFd, confirm: false))
                }
                let target = try DirectoryTarget(root: from, locking: .shared)
                let bar = ProgressBar(label: "restore")
                let restored = try BackupRestore.run(from: target, to: to, unlock: unlock, publicKey: key, sequence: sequence) { p in
                    bar.update(done: p.filesDone, total: p.filesTotal, bytes: p.bytesDone, totalBytes: p.bytesTotal)
                }
                bar.finish()
                let vbar = ProgressBar(label: "verify")
                let check = try restored.vault.verify { p in
                    vbar.update(done: p.blobsDone, total: p.blobsTotal, bytes: p.bytesDone, totalBytes: p.bytesTotal)
                }
                vbar.finish()
                try? restored.vault.recordRestore(
                    from: from, sequence: restored.sequence, complete: check.ok && restored.problems.isEmpty, by: .currentProcess)
                let ok = check.ok && restored.problems.isEmpty
                if json {
                    Console.json([
                        "ok": ok, "vault": to, "sequence": restored.sequence, "createdAt": restored.createdAt,
                        "blobsRestored": restored.blobsRestored, "bytesRestored": restored.bytesRestored,
                        "backupProblems": restored.problems.map { ["kind": $0.kind.rawValue, "name": $0.name, "detail": $0.detail] },
                        "verifyProblems": check.problems.map { ["kind": $0.kind.rawValue, "blob": $0.subject, "detail": $0.detail] },
                    ])
                } else {
                    for p in restored.problems { print("not restored: \(p.description)") }
                    for p in check.problems { print(p.description) }
                    print("\(ok ? "OK" : "RESTORED WITH PROBLEMS"): snapshot \(restored.sequence) of \(restored.createdAt) → \(to); \(restored.blobsRestored) blobs (\(Format.megabytes(restored.bytesRestored))); verify: \(check.blobsChecked) blobs, \(check.patients) patients, \(check.studies) studies")
                }
                if !ok { throw ExitCode(1) }
            }
        }
    }

    struct Publish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a catalog snapshot and signed manifest now (import and account changes do it by themselves).")
        @OptionGroup var options: VaultOptions
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let info = try options.open().publishSnapshot(by: .currentProcess)
                if json {
                    Console.json(["sequence": info.sequence, "blobs": info.blobs, "blobBytes": info.blobBytes, "snapshotBytes": info.snapshotBytes])
                } else {
                    print("snapshot \(info.sequence): \(info.blobs) blobs (\(Format.megabytes(info.blobBytes))), sealed catalog \(Format.megabytes(info.snapshotBytes))")
                }
            }
        }
    }
}

/// --vault, else MEDVAULT_VAULT (the backup commands that need no passphrase do not use VaultOptions).
func vaultDirectory(_ option: String?) throws -> String {
    if let option { return option }
    if let env = ProcessInfo.processInfo.environment["MEDVAULT_VAULT"], !env.isEmpty { return env }
    throw ValidationError("no vault given: use --vault DIR or set MEDVAULT_VAULT")
}
