// medvault: a thin command-line shell over VaultStore. All logic lives in the library.
import VaultCatalog
import VaultIO
import ArgumentParser
import Foundation
import VaultCrypto
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

@main
struct MedVault: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "medvault",
        abstract: "An encrypted vault for DICOM images.",
        discussion: """
            The passphrase is read from --passphrase-fd N, --passphrase-file FILE, the MEDVAULT_PASSPHRASE
            environment variable, or an interactive prompt, in that order; never from the command line.
            MEDVAULT_VAULT may stand for --vault.
            Exit status: 0 success; 1 some files failed or verify found problems; 2 the command could not run.
            """,
        subcommands: [Init.self, Import.self, List.self, Export.self, Verify.self, User.self, Token.self, Audit.self, Serve.self, Passphrase.self, Key.self, Forget.self, Retention.self, Backup.self])

    /// Process-wide hardening before anything is parsed: files this process creates are private to
    /// its user, no core dump can carry a key or a patient's data out of memory, and a crash prints no
    /// registers or memory (the Swift runtime's crash handler is off).
    static func main() {
        umask(0o077)
        ProcessHardening.disableCoreDumps()
        ProcessHardening.disableCrashBacktraces()
        main(nil)
    }

    /// Runs a command body, turning library errors into one clear line and exit status 2.
    static func guarded(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let e as ExitCode {
            throw e
        } catch let e as CleanExit {
            throw e
        } catch let e as ValidationError {
            throw e
        } catch {
            Console.error("medvault: \(describe(error))")
            throw ExitCode(2)
        }
    }

    /// Runs a change through the engine. A change that was made and recorded but whose backup snapshot
    /// could not be written is not undone: warn, and go on with its result (printing a token issued once,
    /// say). `published` tells the caller whether the backup is current.
    @discardableResult
    static func change<T>(_ body: () throws -> T) throws -> (value: T, published: Bool) {
        do {
            return (try body(), true)
        } catch let e as SnapshotNotPublished {
            guard let value = e.value as? T else { throw e }
            Console.error("medvault: warning: \(e)")
            return (value, false)
        }
    }

    static func describe(_ error: any Error) -> String {
        if let full = DiskSpace.fullDiskExplanation(for: error, vaultPath: VaultOptions.lastVaultPath) { return full }
        return String(describing: error)
    }
}

/// Options every vault command shares.
struct VaultOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The vault directory (or set MEDVAULT_VAULT).", valueName: "dir"))
    var vault: String?

    @Option(name: .long, help: ArgumentHelp("Read the passphrase from this file (first line).", valueName: "file"))
    var passphraseFile: String?

    @Option(name: .long, help: ArgumentHelp("Read the passphrase from this open file descriptor.", valueName: "n"))
    var passphraseFd: Int32?

    @Option(name: .long, help: ArgumentHelp("Unlock with the recovery key in this file instead of a passphrase.", valueName: "file"))
    var recoveryKeyFile: String?

    var vaultPath: String {
        get throws {
            if let vault { Self.lastVaultPath = vault; return vault }
            if let env = ProcessInfo.processInfo.environment["MEDVAULT_VAULT"], !env.isEmpty { Self.lastVaultPath = env; return env }
            throw ValidationError("no vault given: use --vault DIR or set MEDVAULT_VAULT")
        }
    }

    /// The vault this process works on, for error messages that depend on its disk (a full disk).
    nonisolated(unsafe) static var lastVaultPath: String?

    func passphrase(confirm: Bool = false) throws -> SecureBytes {
        try PassphraseSource.read(file: passphraseFile, fd: passphraseFd, confirm: confirm)
    }

    func open() throws -> Vault {
        let path = try vaultPath
        if let recoveryKeyFile {
            guard let data = FileManager.default.contents(atPath: recoveryKeyFile) else {
                throw CLIError("cannot read recovery key file \(recoveryKeyFile)")
            }
            return try Vault.open(at: path, recoveryKey: String(decoding: data, as: UTF8.self))
        }
        let pass = try passphrase()
        let vault = try Vault.open(at: path, passphrase: pass)
        DebugHooks.crashIfAsked()
        return vault
    }
}

/// The passphrase key-derivation cost, as typed on the command line.
enum KDFChoice: String, ExpressibleByArgument, CaseIterable {
    case interactive, moderate, sensitive
    var strength: KDFStrength { KDFStrength(rawValue: rawValue) ?? .moderate }
}

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new vault (directory mode 0700) and print its recovery key once.")

    @OptionGroup var options: VaultOptions

    @Option(help: "Passphrase key-derivation cost: interactive, moderate (default), sensitive.")
    var kdf: KDFChoice = .moderate

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        try MedVault.guarded {
            let path = try options.vaultPath
            let pass = try options.passphrase(confirm: true)
            let (vault, recovery) = try Vault.create(at: path, passphrase: pass, kdf: kdf.strength.parameters)
            if !vault.hasPublishedSnapshot {
                Console.error("medvault: warning: the first backup snapshot was not written; run `medvault backup publish`")
            }
            if json {
                Console.json(["vault": vault.layout.root, "recoveryKey": recovery])
            } else {
                print("""
                    Created vault at \(vault.layout.root)

                    Recovery key (shown once; write it down and keep it offline, away from this machine):

                        \(recovery)

                    It opens the vault if every passphrase is lost.
                    """)
            }
        }
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import DICOM files and folders (recursively) into the vault.",
        discussion: """
            Files that are not DICOM, or are malformed, are listed with the reason and skipped; the rest
            still import. Re-importing an identical instance does nothing. Interrupted imports can simply
            be run again. Exit status 1 if any file was not imported.
            """)

    @OptionGroup var options: VaultOptions

    @Argument(help: ArgumentHelp("Files or folders to import.", valueName: "path"))
    var paths: [String]

    @Flag(help: "Delete each original once its encrypted copy is durably written and read back.")
    var removeSource = false

    @Option(help: ArgumentHelp("Files per group commit (fewer: less work lost to a crash; more: faster).", valueName: "n"))
    var batchFiles = 200

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        if paths.isEmpty { throw ValidationError("give at least one file or folder to import") }
        if batchFiles < 1 { throw ValidationError("--batch-files must be at least 1") }
    }

    func run() throws {
        try MedVault.guarded {
            try Vault.checkDICOMSupport()
            let vault = try options.open()
            let bar = ProgressBar(label: "import")
            // The engine records the import and publishes its snapshot, also for what an aborted run committed.
            let (summary, published): (ImportSummary, Bool)
            do {
                (summary, published) = try MedVault.change {
                    try vault.importFiles(
                        paths, options: ImportOptions(removeSource: removeSource, batchFiles: batchFiles),
                        onWait: { Console.error("medvault: another import is writing to this vault; waiting for it to finish…") },
                        progress: { p in bar.update(done: p.filesDone, total: p.filesTotal, bytes: p.bytesDone, totalBytes: p.bytesTotal) })
                }
            } catch let aborted as ImportAborted {
                bar.finish()
                report(aborted.partial)
                throw CLIError(aborted.description)
            }
            bar.finish()
            report(summary)
            if summary.anyFailed || !published { throw ExitCode(1) }
        }
    }

    private func report(_ s: ImportSummary) {
        if json {
            Console.json([
                "imported": s.count("imported"), "alreadyPresent": s.count("already-present"), "conflicts": s.count("conflict"),
                "rejected": s.count("rejected"), "skipped": s.count("skipped"), "failed": s.count("failed"), "bytes": s.bytesImported, "seconds": s.seconds,
                "files": s.results.map { r -> [String: Any] in
                    var o: [String: Any] = ["path": r.path, "outcome": r.outcome.label]
                    if let reason = r.outcome.reason { o["reason"] = reason }
                    if removeSource { o["sourceRemoved"] = r.sourceRemoved }
                    return o
                },
            ])
            return
        }
        for r in s.results where r.outcome.isFailure {
            Console.error("\(r.outcome.label): \(r.path): \(r.outcome.reason ?? "")")
        }
        let rate = s.seconds > 0 ? Double(s.bytesImported) / s.seconds : 0
        var line = "imported \(s.count("imported")), already present \(s.count("already-present"))"
        line += ", conflicts \(s.count("conflict")), rejected \(s.count("rejected")), failed \(s.count("failed"))"
        if s.count("skipped") > 0 { line += ", skipped \(s.count("skipped")) (DICOMDIR)" }
        line += "; \(Format.megabytes(s.bytesImported)) in \(String(format: "%.1f", s.seconds)) s (\(Format.megabytes(Int64(rate)))/s)"
        if removeSource { line += "; \(s.results.filter(\.sourceRemoved).count) originals removed" }
        print(line)
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List the catalog (decrypted in memory only).")

    enum Level: String, ExpressibleByArgument, CaseIterable { case patients, studies, series }

    @OptionGroup var options: VaultOptions

    @Argument(help: "What to list: patients, studies (default) or series.")
    var level: Level = .studies

    @Option(help: ArgumentHelp("Only this patient (exact Patient ID).", valueName: "id"))
    var patientId: String?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        try MedVault.guarded {
            let vault = try options.open()
            switch level {
            case .patients:
                let rows = try vault.listPatients(patientID: patientId, by: .currentProcess)
                if json {
                    Console.json(rows.map { [
                        "patientName": $0.patient.name, "patientID": $0.patient.patientID, "birthDate": $0.patient.birthDate,
                        "sex": $0.patient.sex, "studies": $0.studies, "instances": $0.instances, "bytes": $0.bytes,
                    ] as [String: Any] })
                } else {
                    print(Format.table(
                        ["PATIENT ID", "NAME", "BIRTH DATE", "SEX", "STUDIES", "INSTANCES", "SIZE"],
                        rows.map { [$0.patient.patientID, $0.patient.name, $0.patient.birthDate, $0.patient.sex,
                                    "\($0.studies)", "\($0.instances)", Format.megabytes($0.bytes)] }))
                }
            case .studies:
                let rows = try vault.listStudies(patientID: patientId, by: .currentProcess)
                if json {
                    Console.json(rows.map { [
                        "patientName": $0.patient.name, "patientID": $0.patient.patientID, "studyInstanceUID": $0.study.studyUID,
                        "studyDate": $0.study.date, "accessionNumber": $0.study.accessionNumber, "description": $0.study.description,
                        "referringPhysician": $0.study.referringPhysician, "institution": $0.study.institution,
                        "modalities": $0.modalities, "series": $0.series, "instances": $0.instances, "bytes": $0.bytes,
                    ] as [String: Any] })
                } else {
                    print(Format.table(
                        ["DATE", "PATIENT ID", "NAME", "MODALITIES", "ACCESSION", "DESCRIPTION", "SERIES", "INSTANCES", "STUDY UID"],
                        rows.map { [$0.study.date, $0.patient.patientID, $0.patient.name, $0.modalities.joined(separator: ","),
                                    $0.study.accessionNumber, $0.study.description, "\($0.series)", "\($0.instances)", $0.study.studyUID] }))
                }
            case .series:
                let rows = try vault.listSeries(patientID: patientId, by: .currentProcess)
                if json {
                    Console.json(rows.map { [
                        "patientID": $0.patient.patientID, "studyInstanceUID": $0.study.studyUID, "seriesInstanceUID": $0.series.seriesUID,
                        "modality": $0.series.modality, "seriesNumber": $0.series.number, "description": $0.series.description,
                        "instances": $0.instances, "bytes": $0.bytes,
                    ] as [String: Any] })
                } else {
                    print(Format.table(
                        ["PATIENT ID", "MODALITY", "NUMBER", "DESCRIPTION", "INSTANCES", "SIZE", "SERIES UID"],
                        rows.map { [$0.patient.patientID, $0.series.modality, $0.series.number, $0.series.description,
                                    "\($0.instances)", Format.megabytes($0.bytes), $0.series.seriesUID] }))
                }
            }
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write original DICOM files back out, byte-identical, as OUT/<study>/<series>/<instance>.dcm.")

    @OptionGroup var options: VaultOptions
    @Option(help: ArgumentHelp("Export a whole study.", valueName: "uid")) var study: String?
    @Option(help: ArgumentHelp("Export one series.", valueName: "uid")) var series: String?
    @Option(help: ArgumentHelp("Export one instance.", valueName: "uid")) var instance: String?
    @Option(help: ArgumentHelp("Output directory (created if needed; existing files are never overwritten).", valueName: "dir"))
    var out: String
    @Flag(help: "Print the result as JSON.") var json = false

    func validate() throws {
        if [study, series, instance].compactMap({ $0 }).count != 1 {
            throw ValidationError("give exactly one of --study, --series or --instance")
        }
    }

    func run() throws {
        try MedVault.guarded {
            let selection: ExportSelection =
                if let study { .study(study) } else if let series { .series(series) } else { .instance(instance ?? "") }
            let vault = try options.open()
            let bar = ProgressBar(label: "export")
            let summary: ExportSummary
            do {
                summary = try vault.export(selection, to: out, by: .currentProcess) { p in
                    bar.update(done: p.filesDone, total: p.filesTotal, bytes: p.bytesDone, totalBytes: p.bytesTotal)
                }
            } catch {
                bar.finish()
                throw error
            }
            bar.finish()
            if json {
                Console.json(["files": summary.files, "bytes": summary.bytes, "seconds": summary.seconds, "out": out])
            } else {
                print("exported \(summary.files.count) files (\(Format.megabytes(summary.bytes))) to \(out)")
            }
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every blob (all authentication tags) and the catalog ↔ blob correspondence.",
        discussion: "Names each missing, truncated, altered, swapped or orphan blob. Exit status 1 if any problem is found.")

    @OptionGroup var options: VaultOptions
    @Flag(help: "Print the result as JSON.") var json = false

    func run() throws {
        try MedVault.guarded {
            let vault = try options.open()
            let bar = ProgressBar(label: "verify")
            let report = try vault.verify { p in
                bar.update(done: p.blobsDone, total: p.blobsTotal, bytes: p.bytesDone, totalBytes: p.bytesTotal)
            }
            bar.finish()
            if json {
                Console.json([
                    "ok": report.ok, "blobsChecked": report.blobsChecked, "bytesChecked": report.bytesChecked,
                    "patients": report.patients, "studies": report.studies, "series": report.series,
                    "interruptedLeftovers": report.interruptedLeftovers,
                    "snapshotLeftovers": report.snapshotLeftovers, "snapshotStale": report.snapshotStale,
                    "problems": report.problems.map { ["kind": $0.kind.rawValue, "blob": $0.subject, "detail": $0.detail] },
                ])
            } else {
                for p in report.problems { print(p.description) }
                var line = report.ok ? "OK" : "FAILED: \(report.problems.count) problem(s)"
                line += ": \(report.blobsChecked) blobs (\(Format.megabytes(report.bytesChecked))) verified;"
                line += " \(report.patients) patients, \(report.studies) studies, \(report.series) series"
                if report.interruptedLeftovers > 0 {
                    line += "; \(report.interruptedLeftovers) blobs left by an interrupted import or erasure (removed by the next import, forget or retention run)"
                }
                print(line)
                if !report.snapshotLeftovers.isEmpty {
                    print("snapshots/ holds \(report.snapshotLeftovers.count) file(s) left by an interrupted publish (\(report.snapshotLeftovers.joined(separator: ", "))); the next publish or writer removes them")
                }
                if report.snapshotStale {
                    print("the newest snapshot is older than the catalog (a writer stopped before publishing): backups lack the newest changes; run `medvault backup publish`")
                }
            }
            if !report.ok { throw ExitCode(1) }
        }
    }
}

/// Test-only hooks, compiled into debug builds only.
enum DebugHooks {
    /// MEDVAULT_DEBUG_CRASH=segv makes the process crash right after unlocking the vault (keys in memory),
    /// so that a test can check what a crash prints.
    static func crashIfAsked() {
        #if DEBUG
        if ProcessInfo.processInfo.environment["MEDVAULT_DEBUG_CRASH"] == "segv" {
            let p = UnsafeMutablePointer<Int>(bitPattern: 0x10)
            p?.pointee = 42
        }
        #endif
    }
}
