// Creating and unlocking a vault. A locked vault is a path; an unlocked one is a `Vault` value that
// holds the master key in secure memory. See docs/keys.md.
import Foundation
import VaultDICOM
public import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Paths inside a vault directory.
public struct VaultLayout: Sendable {
    public let root: String
    public init(root: String) {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
    }
    public var config: String { root + "/vault.json" }
    public var catalog: String { root + "/catalog.sqlite" }
    public var blobs: String { root + "/blobs" }
    public var tmp: String { root + "/tmp" }
    public var lock: String { root + "/lock" }
    public var audit: String { root + "/audit" }
    public var snapshots: String { root + "/snapshots" }
    public var run: String { root + "/run" }
    func blob(_ id: BlobID) -> String { root + "/" + id.relativePath }
}

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

    private init(layout: VaultLayout, config: VaultConfig, master: SymmetricKey, creating: Bool = false) throws(VaultError) {
        // A vault whose catalog vanished must not silently open as an empty one.
        if !creating && !FileIO.exists(layout.catalog) {
            throw .catalog("catalog.sqlite is missing from \(layout.root); restore it from a backup")
        }
        self.layout = layout
        self.config = config
        do { keyring = try Keyring(master: master) } catch { throw .crypto(error) }
        sealer = RecordSealer(key: keyring.catalogSeal)
        do { catalog = try Catalog(path: layout.catalog) } catch { throw .catalog(String(describing: error)) }
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

        let master: SymmetricKey
        let recovery: SymmetricKey
        do {
            master = try SymmetricKey.random()
            recovery = try SymmetricKey.random()
        } catch { throw .crypto(error) }
        let vaultID = hex(secureRandomBytes(16))
        let passphraseSlot = try makePassphraseSlot(
            id: hex(secureRandomBytes(8)), label: "admin", master: master, passphrase: passphrase, kdf: kdf, vaultID: vaultID)
        let recoverySlot = try makeRecoverySlot(id: hex(secureRandomBytes(8)), master: master, recovery: recovery, vaultID: vaultID)
        var config = VaultConfig(
            formatVersion: VaultConfig.currentFormatVersion, vaultID: vaultID,
            createdAt: ISO8601DateFormatter().string(from: Date()), blobChunkSize: BlobFormat.chunkSize,
            slots: [passphraseSlot, recoverySlot])
        try ManifestSigningKey.install(in: &config, master: master)  // backup manifests (docs/backup.md)
        do {
            // The catalog first, vault.json last: a directory without vault.json is not yet a vault.
            let vault = try Vault(layout: layout, config: config, master: master, creating: true)
            try FileIO.writeAtomically(config.encoded(), to: layout.config, tmpDirectory: layout.tmp)
            try FileIO.fsyncDirectory(layout.root)
            var display = recovery.exportBytesForDisplay()
            defer { wipe(&display) }
            return (vault, RecoveryKey.format(display))
        } catch let e as VaultError { throw e } catch let e as IOFailure { throw .io(e) } catch {
            throw .catalog(String(describing: error))
        }
    }

    /// Opens the vault at `path` with a passphrase.
    public static func open(at path: String, passphrase: SecureBytes) throws(VaultError) -> Vault {
        ProcessHardening.disableCoreDumps()
        let layout = VaultLayout(root: path)
        let config = try VaultConfig.load(from: layout.config)
        for slot in config.slots where slot.kind == .passphrase {
            guard let kdf = slot.kdf, kdf.algorithm == "argon2id13", let salt = Data(base64Encoded: kdf.salt),
                let wrapped = Data(base64Encoded: slot.wrappedMasterKey)
            else { throw .corruptConfig("key slot \(slot.id) is malformed") }
            let kek: SymmetricKey
            do {
                kek = try PassphraseKDF.deriveKey(
                    passphrase: passphrase, salt: Array(salt),
                    parameters: Argon2idParameters(opsLimit: kdf.opsLimit, memLimit: kdf.memLimit))
            } catch { throw .crypto(error) }
            if let master = try? KeyWrap.unwrap(
                Array(wrapped), with: kek,
                associatedData: VaultConfig.slotAssociatedData(vaultID: config.vaultID, slotID: slot.id))
            {
                return try Vault(layout: layout, config: config, master: master)
            }
        }
        throw .wrongPassphrase
    }

    /// Opens the vault with the printed recovery key (when every passphrase is lost).
    public static func open(at path: String, recoveryKey: String) throws(VaultError) -> Vault {
        ProcessHardening.disableCoreDumps()
        let layout = VaultLayout(root: path)
        let config = try VaultConfig.load(from: layout.config)
        guard var bytes = RecoveryKey.parse(recoveryKey) else { throw .wrongPassphrase }
        let recovery: SymmetricKey
        do { recovery = try SymmetricKey(consuming: &bytes) } catch { throw .crypto(error) }
        for slot in config.slots where slot.kind == .recovery {
            guard let wrapped = Data(base64Encoded: slot.wrappedMasterKey) else {
                throw .corruptConfig("key slot \(slot.id) is malformed")
            }
            let kek: SymmetricKey
            do { kek = try recovery.deriveSubkey(id: 1, context: "MVrecovr") } catch { throw .crypto(error) }
            if let master = try? KeyWrap.unwrap(
                Array(wrapped), with: kek,
                associatedData: VaultConfig.slotAssociatedData(vaultID: config.vaultID, slotID: slot.id))
            {
                return try Vault(layout: layout, config: config, master: master)
            }
        }
        throw .wrongPassphrase
    }

    static func makePassphraseSlot(
        id: String, label: String, master: SymmetricKey, passphrase: SecureBytes, kdf: Argon2idParameters, vaultID: String
    ) throws(VaultError) -> KeySlot {
        let salt = secureRandomBytes(Argon2idParameters.saltByteCount)
        let kek: SymmetricKey
        do { kek = try PassphraseKDF.deriveKey(passphrase: passphrase, salt: salt, parameters: kdf) } catch {
            throw .crypto(error)
        }
        let wrapped = KeyWrap.wrap(master, with: kek, associatedData: VaultConfig.slotAssociatedData(vaultID: vaultID, slotID: id))
        return KeySlot(
            id: id, kind: .passphrase, label: label,
            kdf: .init(algorithm: "argon2id13", opsLimit: kdf.opsLimit, memLimit: kdf.memLimit, salt: Data(salt).base64EncodedString()),
            wrappedMasterKey: Data(wrapped).base64EncodedString())
    }

    static func makeRecoverySlot(id: String, master: SymmetricKey, recovery: SymmetricKey, vaultID: String) throws(VaultError) -> KeySlot {
        let kek: SymmetricKey
        do { kek = try recovery.deriveSubkey(id: 1, context: "MVrecovr") } catch { throw .crypto(error) }
        let wrapped = KeyWrap.wrap(master, with: kek, associatedData: VaultConfig.slotAssociatedData(vaultID: vaultID, slotID: id))
        return KeySlot(id: id, kind: .recovery, label: "recovery", kdf: nil, wrappedMasterKey: Data(wrapped).base64EncodedString())
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
