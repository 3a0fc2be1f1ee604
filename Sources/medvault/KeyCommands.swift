// `medvault passphrase change` and `medvault key …`: the key life cycle (docs/keys.md). Slot changes
// rewrite vault.json only; `key rotate` replaces the master key and rewraps every patient key.
import ArgumentParser
import Foundation
import VaultStore

struct Passphrase: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the passphrase of the key slot you unlock with.", subcommands: [Change.self])

    struct Change: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace your slot's passphrase. The new one comes from a prompt (asked twice), --new-passphrase-file, or MEDVAULT_NEW_PASSPHRASE.")
        @OptionGroup var options: VaultOptions
        @Option(help: ArgumentHelp("Read the new passphrase from this file (first line).", valueName: "file"))
        var newPassphraseFile: String?
        @Option(help: "Key-derivation cost for the new passphrase: interactive, moderate (default), sensitive.")
        var kdf: KDFChoice = .moderate

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                Backup.publishIfStale(vault)  // an earlier writer committed and stopped before publishing
                let new = try PassphraseSource.readNew(file: newPassphraseFile)
                try vault.changePassphrase(to: new, kdf: kdf.strength.parameters)
                try Auditing.record(vault, action: "key.passphrase-change", outcome: "ok", detail: "slot \(vault.unlockedSlotID)")
                Backup.publishAfterChange(vault)  // backups carry vault.json: give them the new slot
                print("""
                    passphrase changed for key slot \(vault.unlockedSlotID): the old passphrase no longer opens this vault.json.
                    Older copies of vault.json (in snapshots/, in backups, on old disks) still open with it until you run
                    `medvault key rotate`.
                    """)
            }
        }
    }
}

struct Key: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Key slots and master-key rotation.", subcommands: [ListSlots.self, AddSlot.self, AddRecovery.self, RemoveSlot.self, Rotate.self])

    struct ListSlots: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List key slots (no key material).")
        @OptionGroup var options: VaultOptions
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                let slots = try vault.keySlots()
                if json {
                    Console.json(slots.map {
                        ["id": $0.id, "kind": $0.kind.rawValue, "label": $0.label, "created": $0.createdAt, "current": $0.isCurrent] as [String: Any]
                    })
                } else {
                    print(Format.table(["ID", "KIND", "LABEL", "CREATED", ""], slots.map {
                        [$0.id, $0.kind.rawValue, $0.label, $0.createdAt, $0.isCurrent ? "(unlocked with)" : ""]
                    }))
                }
            }
        }
    }

    struct AddSlot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a passphrase slot, e.g. for a second administrator. Its passphrase comes from a prompt (asked twice), --new-passphrase-file, or MEDVAULT_NEW_PASSPHRASE.")
        @OptionGroup var options: VaultOptions
        @Option(help: "A label naming the slot's holder, e.g. the administrator's name.") var label: String
        @Option(help: ArgumentHelp("Read the new slot's passphrase from this file (first line).", valueName: "file"))
        var newPassphraseFile: String?
        @Option(help: "Key-derivation cost: interactive, moderate (default), sensitive.") var kdf: KDFChoice = .moderate

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                Backup.publishIfStale(vault)  // an earlier writer committed and stopped before publishing
                let new = try PassphraseSource.readNew(file: newPassphraseFile)
                let id = try vault.addPassphraseSlot(label: label, passphrase: new, kdf: kdf.strength.parameters)
                try Auditing.record(vault, action: "key.add-slot", outcome: "ok", detail: "slot \(id) (\(label))")
                Backup.publishAfterChange(vault)
                print("added key slot \(id) (\(label))")
            }
        }
    }

    struct AddRecovery: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a recovery slot with a new recovery key, printed once. To retire a recovery key that may have been seen: add a new one, remove the old slot, then `key rotate`.")
        @OptionGroup var options: VaultOptions
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                Backup.publishIfStale(vault)  // an earlier writer committed and stopped before publishing
                let (id, recovery) = try vault.addRecoverySlot()
                try Auditing.record(vault, action: "key.add-recovery", outcome: "ok", detail: "slot \(id)")
                Backup.publishAfterChange(vault)
                if json {
                    Console.json(["slot": id, "recoveryKey": recovery])
                } else {
                    print("""
                        added recovery slot \(id). New recovery key (shown once; write it down and keep it offline):

                            \(recovery)
                        """)
                }
            }
        }
    }

    struct RemoveSlot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a key slot by id or label. To shut out someone who knew the slot's passphrase, run `key rotate` afterwards.")
        @OptionGroup var options: VaultOptions
        @Argument(help: "The slot's id or label (see `medvault key list`).") var slot: String

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                Backup.publishIfStale(vault)  // an earlier writer committed and stopped before publishing
                try vault.removeSlot(slot)
                try Auditing.record(vault, action: "key.remove-slot", outcome: "ok", detail: "slot \(slot)")
                Backup.publishAfterChange(vault)
                print("removed key slot \(slot)")
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace the master key: every patient key is rewrapped and every catalog record resealed in one transaction; no blob is re-encrypted. Every slot, the recovery key included, keeps working. Restart a running `medvault serve` afterwards.")
        @OptionGroup var options: VaultOptions

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                Backup.publishIfStale(vault)  // an earlier writer committed and stopped before publishing
                let rotated = try vault.rotateMasterKey()
                try Auditing.record(rotated, action: "key.rotate", outcome: "ok", detail: "master key generation \(rotated.keyGeneration)")
                Backup.publishAfterChange(rotated)
                print("master key rotated (generation \(rotated.keyGeneration)); every key slot and the recovery key still open the vault")
            }
        }
    }
}
