// `medvault forget` and `medvault retention apply`: erasing patients and expired studies for good.
// Both ask for confirmation (or --yes), and both are audited without the identifiers in clear.
import ArgumentParser
import Foundation
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// Asks on the terminal for an exact answer; without a terminal, the caller must have passed --yes.
enum Confirmation {
    static func require(_ question: String, answer: String) throws {
        let tty = Glibc.open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard tty >= 0 else { throw CLIError("no terminal to confirm on: pass --yes to confirm in a script; nothing was changed") }
        defer { close(tty) }
        let prompt = "\(question)\nType \(answer) to confirm: "
        _ = prompt.withCString { write(tty, $0, strlen($0)) }
        var bytes: [UInt8] = []
        var c: UInt8 = 0
        while Glibc.read(tty, &c, 1) == 1 && c != 0x0A { bytes.append(c) }
        guard String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces) == answer else {
            throw CLIError("not confirmed; nothing was changed")
        }
    }
}

struct Forget: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Erase a patient for good (crypto-shredding): the patient key, the catalog rows and the blobs.",
        discussion: """
            Every patient record with this Patient ID (whatever its issuer) is erased. Afterwards no file left in \
            the vault can be decrypted by anyone, the master key's holder included; copies of the blobs in a backup \
            become undecryptable too, and `medvault backup sync` deletes them. The audit log records the erasure \
            under a keyed pseudonym, not the Patient ID.
            """)
    @OptionGroup var options: VaultOptions
    @Option(help: "The Patient ID to erase.") var patientId: String
    @Flag(help: "Do not ask for confirmation.") var yes = false
    @Flag(help: "Print the result as JSON.") var json = false

    func run() throws {
        try MedVault.guarded {
            let vault = try options.open()
            // An earlier erasure that could not finish (a crash, a busy catalog) is finished first.
            let finished = try vault.finishPendingErasures()
            if !finished.isEmpty { print("finished \(finished.count) earlier erasure(s) that had been interrupted") }
            let preview = try vault.forgetPreview(patientID: patientId)
            guard preview.patients > 0 else { throw CLIError("no patient with that Patient ID is in the vault; nothing was changed") }
            if !yes {
                try Confirmation.require(
                    "This erases \(preview.patients) patient record(s): \(preview.studies) studies, \(preview.instances) instances "
                        + "(\(Format.megabytes(preview.bytes))). It cannot be undone.", answer: patientId)
            }
            // The engine records the erasure (as partial when it committed but could not finish).
            let done = try vault.forget(patientID: patientId)
            if !done.snapshotPublished {
                Console.error("medvault: warning: no new backup snapshot could be written; the older ones were removed from the vault "
                    + "because they held the erased key. Run `medvault backup publish` before the next `backup sync`.")
            }
            if json {
                Console.json(["patients": done.patients, "studies": done.studies, "instances": done.instances, "bytes": done.bytes,
                              "pseudonyms": done.pseudonyms] as [String: Any])
            } else {
                print("erased \(done.patients) patient record(s): \(done.studies) studies, \(done.instances) instances, \(Format.megabytes(done.bytes))")
                print("backups still hold the encrypted blobs, now undecryptable; run `medvault backup sync` to remove them there")
            }
        }
    }
}

struct Retention: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove studies past a retention period.", subcommands: [Apply.self])

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove every study whose StudyDate is older than the period; patients left with no study are erased with their key.",
            discussion: "Studies without a usable StudyDate are kept and counted. Use --dry-run first to see what would go.")
        @OptionGroup var options: VaultOptions
        @Option(help: "The retention period: a number and y (years), mo (months) or d (days), e.g. 20y, 240mo, 3650d.") var olderThan: String
        @Flag(help: "Only list what would be removed.") var dryRun = false
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let cutoff = try RetentionPeriod.cutoff(olderThan: olderThan)
                let vault = try options.open()
                // The plan lists Patient IDs: a recorded read, whether it is applied or not.
                let plan = try vault.retentionPlan(cutoff: cutoff, by: .currentProcess)
                if dryRun {
                    show(plan, applied: false)
                    return
                }
                guard !plan.items.isEmpty else {
                    // Nothing to remove, but an interrupted run may have left work to finish.
                    try vault.finishInterruptedWork()
                    show(plan, applied: false)
                    return
                }
                if !yes {
                    try Confirmation.require(
                        "This removes \(plan.items.count) studies dated before \(cutoff) (\(plan.instances) instances, "
                            + "\(Format.megabytes(plan.bytes))) and erases \(plan.patientsErased) patients. It cannot be undone.",
                        answer: "remove")
                }
                let (applied, erased) = try vault.applyRetention(cutoff: cutoff)  // audited by the erasure itself
                if !erased.snapshotPublished {
                    Console.error("medvault: warning: no new backup snapshot could be written; run `medvault backup publish`")
                }
                show(applied, applied: true)
            }
        }

        func show(_ plan: RetentionPlan, applied: Bool) {
            if json {
                Console.json([
                    "cutoff": plan.cutoff, "applied": applied, "studies": plan.items.count, "instances": plan.instances, "bytes": plan.bytes,
                    "patientsErased": plan.patientsErased, "undatedStudiesKept": plan.undatedStudies,
                    "items": plan.items.map { ["patientID": $0.patientID, "studyUID": $0.studyUID, "studyDate": $0.studyDate,
                                               "instances": $0.instances, "bytes": $0.bytes] as [String: Any] },
                ] as [String: Any])
                return
            }
            if !plan.items.isEmpty {
                print(Format.table(["STUDY DATE", "PATIENT ID", "STUDY UID", "INSTANCES", "SIZE"], plan.items.map {
                    [$0.studyDate, $0.patientID, $0.studyUID, "\($0.instances)", Format.megabytes($0.bytes)]
                }))
            }
            let verb = applied ? "removed" : "would remove"
            print("\(verb) \(plan.items.count) studies dated before \(plan.cutoff): \(plan.instances) instances, \(Format.megabytes(plan.bytes)); "
                  + "\(plan.patientsErased) patients erased; \(plan.undatedStudies) undated studies kept")
        }
    }
}
