// Creating and unlocking a vault. A locked vault is a path; an unlocked one is a `Vault` value that
// holds the master key in secure memory. See docs/keys.md.
public import VaultKeys
public import VaultCatalog
public import VaultFormats
import VaultIO
import Foundation
import VaultDICOM
import VaultAudit
public import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// How expensive the passphrase derivation is. `moderate` is the default for a vault.
public enum KDFStrength: String, Sendable, CaseIterable {
    case interactive, moderate, sensitive
    public var parameters: Argon2idParameters {
        switch self {
        case .interactive: .interactive
        case .moderate: .moderate
        case .sensitive: .sensitive
        }
    }
}

/// An unlocked vault. Holds the master key (secure memory) and an open catalog.
public final class Vault: Sendable {
    public let layout: VaultLayout
    let config: VaultConfig
    let keyring: Keyring
    let catalog: Catalog
    let sealer: RecordSealer
    /// The log in `audit/`, keyed by this vault's audit keys; one per vault value, so that concurrent
    /// appends of this process are written together (`AuditGroupCommit`).
    let auditLog: AuditLog
    /// The key slot this process unlocked (passphrase change replaces this one).
    public let unlockedSlotID: String
    /// Which master key this process holds (`VaultConfig.keyGeneration`, or the pending one mid-rotation).
    let masterKeyGeneration: Int

    init(layout: VaultLayout, config: VaultConfig, keyring: Keyring, catalog: Catalog, slotID: String, generation: Int) {
        self.layout = layout
        masterKeyGeneration = generation
        self.config = config
        self.keyring = keyring
        self.catalog = catalog
        self.unlockedSlotID = slotID
        sealer = RecordSealer(key: keyring.catalogSeal)
        auditLog = AuditLog(directory: layout.audit, sealKey: keyring.auditSeal, macKey: keyring.auditMAC)
    }

    /// Creates a new vault at `path` (which must not exist, or be an empty directory). Returns the vault
    /// and the recovery key, to be shown once and kept offline.
    public static func create(
        at path: String, passphrase: SecureBytes, kdf: Argon2idParameters = .moderate
    ) throws(VaultError) -> (vault: Vault, recoveryKey: String) {
        ProcessHardening.disableCoreDumps()
        try Passphrases.checkStrength(passphrase)
        let layout = VaultLayout(root: path)
        if FileIO.exists(layout.root) {
            guard FileIO.isDirectory(layout.root), FileIO.list(layout.root).isEmpty else {
                throw .alreadyExists(layout.root)
            }
        }
        do throws(IOFailure) {
            try FileIO.makeDirectory(layout.root)
            guard chmod(layout.root, 0o700) == 0 else { throw FileIO.failure("chmod", layout.root) }
            for dir in [layout.blobs, layout.tmp, layout.audit, layout.snapshots, layout.run] {
                try FileIO.makeDirectory(dir)
            }
            for fan in BlobID.fanOut { try FileIO.makeDirectory(layout.blobs + "/" + fan) }
        } catch { throw .io(error) }

        let master: SymmetricKey, indexKey: SymmetricKey, recovery: SymmetricKey
        do {
            master = try SymmetricKey.random()
            indexKey = try SymmetricKey.random()
            recovery = try SymmetricKey.random()
        } catch { throw .crypto(error) }
        let vaultID = hex(secureRandomBytes(16))
        let passphraseSlot = try makePassphraseSlot(label: "admin", master: master, generation: 1, passphrase: passphrase, kdf: kdf, vaultID: vaultID)
        let recoverySlot = try makeRecoverySlot(master: master, generation: 1, recovery: recovery, vaultID: vaultID)
        var config = VaultConfig(
            formatVersion: VaultConfig.currentFormatVersion, vaultID: vaultID,
            createdAt: ISO8601DateFormatter().string(from: Date()), blobChunkSize: BlobFormat.chunkSize,
            keyGeneration: 1, pendingKeyGeneration: nil, slots: [passphraseSlot, recoverySlot])
        try ManifestSigningKey.install(in: &config, master: master)  // backup manifests (docs/backup.md)
        do {
            // The catalog first, vault.json last: a directory without vault.json is not yet a vault.
            let catalog = try Catalog(path: layout.catalog)
            try catalog.storeVaultKeys([
                (Catalog.wrappedIndexKeyName, KeyWrap.wrap(indexKey, with: master, associatedData: Keyring.indexKeyAssociatedData(vaultID: vaultID))),
                (Catalog.masterKeyCheckName, Keyring.masterKeyCheck(master, vaultID: vaultID)),
            ])
            let vault = Vault(
                layout: layout, config: config, keyring: try Keyring(master: master, indexKey: indexKey), catalog: catalog,
                slotID: passphraseSlot.id, generation: 1)
            try FileIO.writeAtomically(try config.encoded(), to: layout.config, tmpDirectory: layout.tmp)
            try FileIO.fsyncDirectory(layout.root)
            // A first (empty) snapshot, so that `backup sync` works at once. The vault exists either way;
            // if this fails, `hasPublishedSnapshot` says so and the first change writes one.
            _ = try? vault.publishSnapshot()
            var display = recovery.exportBytesForDisplay()
            defer { wipe(&display) }
            return (vault, RecoveryKey.format(display))
        } catch let e as VaultError { throw e } catch let e as IOFailure { throw .io(e) } catch let e as CryptoError {
            throw .crypto(e)
        } catch {
            throw .catalog(String(describing: error))
        }
    }

    /// Opens the vault at `path` with a passphrase.
    public static func open(at path: String, passphrase: SecureBytes) throws(VaultError) -> Vault {
        ProcessHardening.disableCoreDumps()
        let layout = VaultLayout(root: path)
        let config = try VaultConfig.load(from: layout.config)
        let (slot, secret) = try findSlot(config, passphrase: passphrase)
        return try unlockRetrying(layout: layout, config: config, slot: slot, secret: secret)
    }

    /// Opens the vault with the printed recovery key (when every passphrase is lost).
    public static func open(at path: String, recoveryKey: String) throws(VaultError) -> Vault {
        ProcessHardening.disableCoreDumps()
        let layout = VaultLayout(root: path)
        let config = try VaultConfig.load(from: layout.config)
        let (slot, secret) = try findSlot(config, recoveryKey: recoveryKey)
        return try unlockRetrying(layout: layout, config: config, slot: slot, secret: secret)
    }

    /// `unlock`, tried once more with a fresh vault.json when the first try found no matching key and
    /// vault.json changed meanwhile (a rotation committed between reading it and reading the catalog).
    static func unlockRetrying(layout: VaultLayout, config: VaultConfig, slot: KeySlot, secret: SealingKeyPair) throws(VaultError) -> Vault {
        do {
            return try unlock(layout: layout, config: config, slot: slot, secret: secret)
        } catch .keyMismatch {
            let fresh = try VaultConfig.load(from: layout.config)
            guard fresh != config, let sameSlot = fresh.slots.first(where: { $0.id == slot.id }) else { throw .keyMismatch }
            return try unlock(layout: layout, config: fresh, slot: sameSlot, secret: secret)
        }
    }

    /// The passphrase slot this passphrase opens (Argon2id once per passphrase slot tried).
    static func findSlot(_ config: VaultConfig, passphrase: SecureBytes) throws(VaultError) -> (KeySlot, SealingKeyPair) {
        for slot in config.slots where slot.kind == .passphrase {
            guard let kdf = slot.kdf, kdf.algorithm == "argon2id13", let salt = Data(base64Encoded: kdf.salt) else {
                throw .corruptConfig("key slot \(slot.id) is malformed")
            }
            let kek: SymmetricKey
            do {
                kek = try PassphraseKDF.deriveKey(
                    passphrase: passphrase, salt: Array(salt),
                    parameters: Argon2idParameters(opsLimit: kdf.opsLimit, memLimit: kdf.memLimit))
            } catch { throw .crypto(error) }
            if let secret = try slotSecret(slot, kek: kek, vaultID: config.vaultID) { return (slot, secret) }
        }
        throw .wrongPassphrase
    }

    /// The recovery slot this recovery key opens.
    static func findSlot(_ config: VaultConfig, recoveryKey: String) throws(VaultError) -> (KeySlot, SealingKeyPair) {
        guard var bytes = RecoveryKey.parse(recoveryKey) else { throw .wrongPassphrase }
        let recovery: SymmetricKey
        do { recovery = try SymmetricKey(consuming: &bytes) } catch { throw .crypto(error) }
        for slot in config.slots where slot.kind == .recovery {
            let kek: SymmetricKey
            do { kek = try recovery.deriveSubkey(id: 1, context: "MVrecovr") } catch { throw .crypto(error) }
            if let secret = try slotSecret(slot, kek: kek, vaultID: config.vaultID) { return (slot, secret) }
        }
        throw .wrongPassphrase
    }

    /// The master keys sealed in a slot: the current one, then the pending one while a rotation is
    /// unfinished. Which one is in force is for the catalog to say (`unlock`).
    static func sealedMasterKeys(_ config: VaultConfig, slot: KeySlot, secret: SealingKeyPair) throws(VaultError) -> [(key: SymmetricKey, generation: Int)] {
        var candidates: [(sealed: String, generation: Int)] = [(slot.sealedMasterKey, config.keyGeneration)]
        if let pending = slot.pendingSealedMasterKey, let generation = config.pendingKeyGeneration {
            candidates.append((pending, generation))
        }
        var keys: [(key: SymmetricKey, generation: Int)] = []
        for candidate in candidates {
            guard let sealed = Data(base64Encoded: candidate.sealed) else { throw .corruptConfig("key slot \(slot.id) is malformed") }
            let ad = VaultConfig.masterKeyAssociatedData(vaultID: config.vaultID, slotID: slot.id, generation: candidate.generation)
            guard let master = try? KeySealing.open(Array(sealed), with: secret, associatedData: ad) else {
                throw .corruptConfig("key slot \(slot.id): the sealed master key fails authentication")
            }
            keys.append((master, candidate.generation))
        }
        return keys
    }

    /// The slot's X25519 key pair, or nil when `kek` is not this slot's.
    static func slotSecret(_ slot: KeySlot, kek: SymmetricKey, vaultID: String) throws(VaultError) -> SealingKeyPair? {
        guard let wrapped = Data(base64Encoded: slot.wrappedSecretKey), let publicKey = Data(base64Encoded: slot.publicKey) else {
            throw .corruptConfig("key slot \(slot.id) is malformed")
        }
        let ad = VaultConfig.slotSecretAssociatedData(vaultID: vaultID, slotID: slot.id)
        guard let secret = try? KeyWrap.unwrap(Array(wrapped), with: kek, associatedData: ad) else { return nil }
        let pair: SealingKeyPair
        do { pair = try SealingKeyPair(secretKey: secret) } catch { throw .crypto(error) }
        guard constantTimeEquals(pair.publicKey, Array(publicKey)) else {
            throw .corruptConfig("key slot \(slot.id): its public key does not match its secret key")
        }
        return pair
    }

    /// Opens the master key sealed in `slot` and checks it against the catalog. While a rotation is
    /// unfinished the slot holds two master keys; the one the catalog was last written with wins.
    static func unlock(layout: VaultLayout, config: VaultConfig, slot: KeySlot, secret: SealingKeyPair) throws(VaultError) -> Vault {
        // A vault whose catalog vanished must not silently open as an empty one.
        guard FileIO.exists(layout.catalog) else {
            throw .catalog("catalog.sqlite is missing from \(layout.root); restore it from a backup")
        }
        let candidates = try sealedMasterKeys(config, slot: slot, secret: secret)
        let catalog: Catalog
        let check: [UInt8]?, wrappedIndexKey: [UInt8]?
        do {
            catalog = try Catalog(path: layout.catalog)
            check = try catalog.vaultKey(Catalog.masterKeyCheckName)
            wrappedIndexKey = try catalog.vaultKey(Catalog.wrappedIndexKeyName)
        } catch { throw .catalog(String(describing: error)) }
        guard let check, let wrappedIndexKey else { throw .catalog("the catalog holds no key record; it is not a format-2 catalog") }
        for candidate in candidates {
            let master = candidate.key
            guard constantTimeEquals(Keyring.masterKeyCheck(master, vaultID: config.vaultID), check) else { continue }
            // A rotation was interrupted: settle it, so that everything reading vault.json afterwards
            // (snapshots, slot commands) sees one key. Only if the writer lock is free now: a running
            // rotation or import holds it, and a reader must not wait for them (it opens with the key
            // the catalog uses either way; the next writer settles).
            if config.pendingKeyGeneration != nil,
                try settleInterruptedRotation(layout: layout, catalog: catalog, master: master, generation: candidate.generation)
            {
                let settled = try VaultConfig.load(from: layout.config)
                guard let sameSlot = settled.slots.first(where: { $0.id == slot.id }) else { throw .wrongPassphrase }
                return try unlock(layout: layout, config: settled, slot: sameSlot, secret: secret)
            }
            do {
                let indexKey = try KeyWrap.unwrap(wrappedIndexKey, with: master, associatedData: Keyring.indexKeyAssociatedData(vaultID: config.vaultID))
                return Vault(layout: layout, config: config, keyring: try Keyring(master: master, indexKey: indexKey), catalog: catalog, slotID: slot.id,
                    generation: candidate.generation)
            } catch {
                throw .catalog("the catalog's index key fails authentication under the master key")
            }
        }
        throw .keyMismatch
    }

    /// If the writer lock is free: when vault.json still has a pending key and the catalog still
    /// matches `master`, promotes the pending key if `master` is it, drops it otherwise. Returns whether
    /// vault.json may have changed (the caller then reads it again); false when the lock is busy.
    private static func settleInterruptedRotation(layout: VaultLayout, catalog: Catalog, master: SymmetricKey, generation: Int) throws(VaultError) -> Bool {
        let lock: WriterLock?
        do { lock = try WriterLock.attempt(path: layout.lock) } catch { throw .io(error) }
        guard let lock else { return false }
        defer { withExtendedLifetime(lock) {} }
        let config = try VaultConfig.load(from: layout.config)
        guard let pending = config.pendingKeyGeneration else { return true }  // settled meanwhile
        let check: [UInt8]?
        do { check = try catalog.vaultKey(Catalog.masterKeyCheckName) } catch { throw .catalog(String(describing: error)) }
        // Another rotation committed meanwhile: read everything again.
        guard let check, constantTimeEquals(check, Keyring.masterKeyCheck(master, vaultID: config.vaultID)) else { return true }
        let settled = generation == pending ? promotingPending(config) : droppingPending(config)
        let bytes = try settled.encoded()
        do {
            try FileIO.writeAtomically(bytes, to: layout.config, tmpDirectory: layout.tmp)
            try FileIO.fsyncDirectory(layout.root)
        } catch { throw .io(error) }
        return true
    }

    static func makePassphraseSlot(
        id: String = hex(secureRandomBytes(8)), label: String, master: SymmetricKey, generation: Int, passphrase: SecureBytes,
        kdf: Argon2idParameters, vaultID: String
    ) throws(VaultError) -> KeySlot {
        let salt = secureRandomBytes(Argon2idParameters.saltByteCount)
        let kek: SymmetricKey
        do { kek = try PassphraseKDF.deriveKey(passphrase: passphrase, salt: salt, parameters: kdf) } catch {
            throw .crypto(error)
        }
        var slot = try makeSlot(id: id, kind: .passphrase, label: label, kek: kek, master: master, generation: generation, vaultID: vaultID)
        slot.kdf = .init(algorithm: "argon2id13", opsLimit: kdf.opsLimit, memLimit: kdf.memLimit, salt: Data(salt).base64EncodedString())
        return slot
    }

    static func makeRecoverySlot(
        id: String = hex(secureRandomBytes(8)), master: SymmetricKey, generation: Int, recovery: SymmetricKey, vaultID: String
    ) throws(VaultError) -> KeySlot {
        let kek: SymmetricKey
        do { kek = try recovery.deriveSubkey(id: 1, context: "MVrecovr") } catch { throw .crypto(error) }
        return try makeSlot(id: id, kind: .recovery, label: "recovery", kek: kek, master: master, generation: generation, vaultID: vaultID)
    }

    /// A new slot: a fresh X25519 key pair, its secret wrapped by `kek`, the master key sealed to it.
    private static func makeSlot(
        id: String, kind: KeySlot.Kind, label: String, kek: SymmetricKey, master: SymmetricKey, generation: Int, vaultID: String
    ) throws(VaultError) -> KeySlot {
        do {
            let pair = try SealingKeyPair.random()
            let wrapped = KeyWrap.wrap(pair.secretKey, with: kek, associatedData: VaultConfig.slotSecretAssociatedData(vaultID: vaultID, slotID: id))
            let sealed = try KeySealing.seal(
                master, to: pair.publicKey,
                associatedData: VaultConfig.masterKeyAssociatedData(vaultID: vaultID, slotID: id, generation: generation))
            return KeySlot(
                id: id, kind: kind, label: label, createdAt: ISO8601DateFormatter().string(from: Date()), kdf: nil,
                publicKey: Data(pair.publicKey).base64EncodedString(), wrappedSecretKey: Data(wrapped).base64EncodedString(),
                sealedMasterKey: Data(sealed).base64EncodedString(), pendingSealedMasterKey: nil)
        } catch { throw .crypto(error) }
    }
}

extension Vault {
    /// Fails loudly if DCMTK cannot parse (its data dictionary is missing), before any import starts.
    public static func checkDICOMSupport() throws {
        try DICOMParser.checkAvailable()
    }
}

/// Passphrase rules, kept minimal and explicit.
public enum Passphrases {
    public static let minimumLength = 10
    static func checkStrength(_ p: SecureBytes) throws(VaultError) {
        let n = p.withUnsafeBytes { $0.count }
        if n < minimumLength {
            throw .passphraseRejected("the passphrase must be at least \(minimumLength) characters long")
        }
    }
}

/// The recovery key as a person writes it down: 52 characters of RFC 4648 base32 in groups of four,
/// prefixed "MVRK-". Parsing ignores case, spaces and dashes.
public enum RecoveryKey {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

    static func format(_ bytes: [UInt8]) -> String {
        var chars: [Character] = []
        var buffer = 0, bits = 0
        for b in bytes {
            buffer = (buffer << 8) | Int(b)
            bits += 8
            while bits >= 5 {
                chars.append(alphabet[(buffer >> (bits - 5)) & 31])
                bits -= 5
            }
        }
        if bits > 0 { chars.append(alphabet[(buffer << (5 - bits)) & 31]) }
        var groups: [String] = []
        var i = 0
        while i < chars.count {
            groups.append(String(chars[i..<min(i + 4, chars.count)]))
            i += 4
        }
        return "MVRK-" + groups.joined(separator: "-")
    }

    static func parse(_ text: String) -> [UInt8]? {
        var s = text.uppercased().filter { !$0.isWhitespace && $0 != "-" }
        if s.hasPrefix("MVRK") { s.removeFirst(4) }
        var out: [UInt8] = []
        var buffer = 0, bits = 0
        for c in s {
            guard let v = alphabet.firstIndex(of: c) else { return nil }
            buffer = (buffer << 5) | v
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> (bits - 8)) & 0xFF))
                bits -= 8
            }
            buffer &= (1 << bits) - 1
        }
        return out.count == SymmetricKey.byteCount ? out : nil
    }
}
