// The key life cycle: passphrase change, more key slots, master-key rotation. See docs/keys.md.
//
// Slot operations rewrite vault.json only (the master key is sealed again, nothing else changes).
// Rotation touches both vault.json and the catalog, in three durable steps, so that a crash at any
// moment leaves a vault that opens, with the old master key or the new one:
//   1. vault.json gains, in every slot, the new master key sealed as "pending";
//   2. one catalog transaction rewraps every patient key and the index key, reseals every record and
//      stores the new master key's check value;
//   3. vault.json promotes "pending" to current.
// Opening tries the current key, then the pending one, and takes whichever matches the catalog.
public import VaultAudit
public import VaultKeys
import VaultIO
import Foundation
import VaultCatalog
public import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// What `key list` shows of a slot. No key material.
public struct KeySlotInfo: Sendable, Equatable {
    public let id: String
    public let kind: KeySlot.Kind
    public let label: String
    public let createdAt: String
    /// The slot this process unlocked.
    public let isCurrent: Bool
}


extension Vault {
    /// Whether the catalog was last written with this process's master key (false after another process
    /// rotated it).
    /// The master key's generation this process holds (1 at `init`, +1 per rotation).
    public var keyGeneration: Int { masterKeyGeneration }

    public func isMasterKeyCurrent() -> Bool {
        (try? masterKeyIsCurrent()) ?? false
    }

    /// Like `isMasterKeyCurrent`, but a catalog that cannot be read is an error, not "rotated".
    public func masterKeyIsCurrent() throws -> Bool {
        guard let check = try catalog.vaultKey(Catalog.masterKeyCheckName) else { return false }
        return constantTimeEquals(check, Keyring.masterKeyCheck(keyring.master, vaultID: config.vaultID))
    }

    func requireCurrentMasterKey() throws(VaultError) {
        guard isMasterKeyCurrent() else { throw .keyRotated }
    }

    public func keySlots() throws(VaultError) -> [KeySlotInfo] {
        try VaultConfig.load(from: layout.config).slots.map {
            KeySlotInfo(id: $0.id, kind: $0.kind, label: $0.label, createdAt: $0.createdAt, isCurrent: $0.id == unlockedSlotID)
        }
    }

    /// Replaces the slot this process was unlocked with by a new one for `newPassphrase`: new salt, new
    /// key pair, the master key sealed to it. The old passphrase opens nothing afterwards.
    public func changePassphrase(
        to newPassphrase: SecureBytes, kdf: Argon2idParameters = .moderate, by actor: AuditActor = .currentProcess
    ) throws {
        try Passphrases.checkStrength(newPassphrase)
        try updateConfig(.passphraseChange, by: actor, detail: { "slot \(unlockedSlotID)" }) { (config: inout VaultConfig) throws(VaultError) in
            guard let i = config.slots.firstIndex(where: { $0.id == unlockedSlotID }) else {
                throw .slotRefused("the key slot this vault was opened with no longer exists")
            }
            guard config.slots[i].kind == .passphrase else {
                throw .slotRefused("the vault was opened with the recovery key: add a passphrase with `medvault key add-slot` instead")
            }
            config.slots[i] = try Self.makePassphraseSlot(
                id: config.slots[i].id, label: config.slots[i].label, master: keyring.master, generation: config.keyGeneration,
                passphrase: newPassphrase, kdf: kdf, vaultID: config.vaultID)
        }
    }

    /// Adds a passphrase slot (a second administrator). Returns the new slot's id.
    @discardableResult
    public func addPassphraseSlot(
        label: String, passphrase: SecureBytes, kdf: Argon2idParameters = .moderate, by actor: AuditActor = .currentProcess
    ) throws -> String {
        try Passphrases.checkStrength(passphrase)
        var id = ""
        try updateConfig(.slotAdd, by: actor, detail: { "slot \(id) (\(label))" }) { (config: inout VaultConfig) throws(VaultError) in
            guard !config.slots.contains(where: { $0.label == label }) else {
                throw .slotRefused("a key slot labelled \"\(label)\" exists already; choose another label")
            }
            let slot = try Self.makePassphraseSlot(
                label: label, master: keyring.master, generation: config.keyGeneration, passphrase: passphrase, kdf: kdf,
                vaultID: config.vaultID)
            id = slot.id
            config.slots.append(slot)
        }
        return id
    }

    /// Adds a recovery slot with a new random recovery key, returned once for printing (e.g. after the
    /// old one may have been seen: add a new one, then remove the old slot and rotate).
    public func addRecoverySlot(by actor: AuditActor = .currentProcess) throws -> (slotID: String, recoveryKey: String) {
        let recovery: SymmetricKey
        do { recovery = try SymmetricKey.random() } catch { throw VaultError.crypto(error) }
        var id = ""
        try updateConfig(.recoveryAdd, by: actor, detail: { "slot \(id)" }) { (config: inout VaultConfig) throws(VaultError) in
            var slot = try Self.makeRecoverySlot(master: keyring.master, generation: config.keyGeneration, recovery: recovery, vaultID: config.vaultID)
            slot.label = "recovery-" + slot.id.prefix(6)
            id = slot.id
            config.slots.append(slot)
        }
        var display = recovery.exportBytesForDisplay()
        defer { wipe(&display) }
        return (id, RecoveryKey.format(display))
    }

    /// Removes a slot, by id or label. Refuses to remove the last passphrase slot, or the only way
    /// left to open the vault.
    public func removeSlot(_ idOrLabel: String, by actor: AuditActor = .currentProcess) throws {
        try updateConfig(.slotRemove, by: actor, detail: { "slot \(idOrLabel)" }) { (config: inout VaultConfig) throws(VaultError) in
            let matches = config.slots.filter { $0.id == idOrLabel || $0.label == idOrLabel }
            guard matches.count == 1, let slot = matches.first else {
                throw .slotRefused(matches.isEmpty ? "no key slot has id or label \"\(idOrLabel)\"" : "\"\(idOrLabel)\" names several slots; use the id")
            }
            let remaining = config.slots.filter { $0.id != slot.id }
            guard remaining.contains(where: { $0.kind == .passphrase }) else {
                throw .slotRefused("refusing to remove the last passphrase slot: add another with `medvault key add-slot` first")
            }
            config.slots = remaining
        }
    }

    /// Replaces the master key (see the top of this file). Returns the vault unlocked with the new key;
    /// this value is stale afterwards. Blobs are not touched: their file keys hang off patient keys,
    /// which only get rewrapped.
    public func rotateMasterKey(by actor: AuditActor = .currentProcess) throws -> Vault {
        try withWriterLock {
            let rotated = try rotateLocked()
            // Recorded and published by the new key's vault: this one's snapshot key is retired.
            return try rotated.recordChange(.keyRotate, by: actor) { report in
                report.detail = "master key generation \(rotated.keyGeneration)"
                report.wroteVault = true
                return rotated
            }
        }
    }

    /// The rotation's three steps, with the writer lock held.
    private func rotateLocked() throws(VaultError) -> Vault {
        var config = try normalizedConfig()
        let newMaster: SymmetricKey
        do { newMaster = try SymmetricKey.random() } catch { throw .crypto(error) }
        let generation = config.keyGeneration + 1

        // Step 1: every slot gets the new key, sealed to its public key; no passphrase needed.
        for i in config.slots.indices {
            guard let publicKey = Data(base64Encoded: config.slots[i].publicKey) else {
                throw .corruptConfig("key slot \(config.slots[i].id) is malformed")
            }
            let ad = VaultConfig.masterKeyAssociatedData(vaultID: config.vaultID, slotID: config.slots[i].id, generation: generation)
            do { config.slots[i].pendingSealedMasterKey = Data(try KeySealing.seal(newMaster, to: Array(publicKey), associatedData: ad)).base64EncodedString() } catch {
                throw .crypto(error)
            }
        }
        config.pendingKeyGeneration = generation
        // The backup manifest signing seed is wrapped by MK too: rewrapped, not replaced, so that every
        // backup keeps trusting the same public key.
        if let wrapped = config.wrappedManifestSigningSeed {
            let seed = try ManifestSigningKey.unwrap(wrapped, master: keyring.master, vaultID: config.vaultID)
            config.pendingWrappedManifestSigningSeed = ManifestSigningKey.wrap(seed: seed, master: newMaster, vaultID: config.vaultID)
        }
        try writeConfig(config)
        FaultInjection.point("rotate.pending-written")

        // Step 2: one transaction. Until it commits, the old key is the one that matches the catalog.
        let newKeyring: Keyring
        do { newKeyring = try Keyring(master: newMaster, indexKey: keyring.indexKey) } catch { throw .crypto(error) }
        let newSealer = RecordSealer(key: newKeyring.catalogSeal)
        do {
            let wrappedIndex = KeyWrap.wrap(keyring.indexKey, with: newMaster, associatedData: Keyring.indexKeyAssociatedData(vaultID: config.vaultID))
            try catalog.rewrapAll(
                patient: { ref, wrapped, sealed in
                    let ad = Vault.patientKeyAssociatedData(ref)
                    let patientKey = try KeyWrap.unwrap(wrapped, with: keyring.master, associatedData: ad)
                    return (KeyWrap.wrap(patientKey, with: newMaster, associatedData: ad), try reseal(sealed, table: "patient", index: ref, with: newSealer))
                },
                record: { table, index, sealed in try reseal(sealed, table: table, index: index, with: newSealer) },
                vaultKeys: [
                    (Catalog.wrappedIndexKeyName, wrappedIndex),
                    (Catalog.masterKeyCheckName, Keyring.masterKeyCheck(newMaster, vaultID: config.vaultID)),
                ],
                beforeCommit: { FaultInjection.point("rotate.before-commit") })
        } catch let e as VaultError { throw e } catch {
            throw .catalog("rotation stopped before its commit; the old key remains in force: \(error)")
        }
        FaultInjection.point("rotate.committed")

        // Step 3: the pending key becomes the current one.
        try writeConfig(Self.promotingPending(config))
        FaultInjection.point("rotate.finished")
        return Vault(
            layout: layout, config: Self.promotingPending(config), keyring: newKeyring, catalog: catalog, slotID: unlockedSlotID,
            generation: generation)
    }

    private func reseal(_ box: [UInt8], table: String, index: [UInt8], with newSealer: RecordSealer) throws -> [UInt8] {
        var plain = try AEAD.open(box, key: keyring.catalogSeal, associatedData: RecordSealer.associatedData(table, index))
        defer { wipe(&plain) }
        return AEAD.seal(plain, key: newSealer.key, associatedData: RecordSealer.associatedData(table, index))
    }

    // MARK: vault.json updates

    /// A key-slot change (`Vault.change`): loads vault.json under the writer lock, finishes or undoes an
    /// interrupted rotation, applies `update`, and writes it back atomically. `detail` is read after
    /// `update`, for the audit record.
    func updateConfig(
        _ action: AuditAction, by actor: AuditActor, detail: () -> String, _ update: (inout VaultConfig) throws(VaultError) -> Void
    ) throws {
        try change(action, by: actor) { report in
            var config = try normalizedConfig()
            try update(&config)
            try writeConfig(config)
            report.wroteVault = true
            report.detail = detail()
        }
    }

    /// vault.json as on disk, with an interrupted rotation settled. The caller holds the writer lock and
    /// has checked that our master key is the catalog's: if ours is the pending one, the rotation's
    /// catalog commit happened and the pending key becomes current; otherwise it never will, and is dropped.
    func normalizedConfig() throws(VaultError) -> VaultConfig {
        let config = try VaultConfig.load(from: layout.config)
        guard let pending = config.pendingKeyGeneration else { return config }
        return masterKeyGeneration == pending ? Self.promotingPending(config) : Self.droppingPending(config)
    }

    static func promotingPending(_ config: VaultConfig) -> VaultConfig {
        var c = config
        guard let generation = c.pendingKeyGeneration else { return c }
        for i in c.slots.indices {
            if let p = c.slots[i].pendingSealedMasterKey { c.slots[i].sealedMasterKey = p }
            c.slots[i].pendingSealedMasterKey = nil
        }
        c.keyGeneration = generation
        c.pendingKeyGeneration = nil
        if let seed = c.pendingWrappedManifestSigningSeed { c.wrappedManifestSigningSeed = seed }
        c.pendingWrappedManifestSigningSeed = nil
        return c
    }

    static func droppingPending(_ config: VaultConfig) -> VaultConfig {
        var c = config
        for i in c.slots.indices { c.slots[i].pendingSealedMasterKey = nil }
        c.pendingKeyGeneration = nil
        c.pendingWrappedManifestSigningSeed = nil
        return c
    }

    func writeConfig(_ config: VaultConfig) throws(VaultError) {
        let bytes = try config.encoded()
        do {
            try FileIO.writeAtomically(bytes, to: layout.config, tmpDirectory: layout.tmp)
            try FileIO.fsyncDirectory(layout.root)
        } catch { throw .io(error) }
    }
}
