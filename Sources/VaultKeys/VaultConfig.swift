// vault.json: the only clear-text file of a vault. It holds parameters and wrapped keys, never a secret.
public import VaultIO
import Foundation
public import VaultCrypto

/// Errors a vault operation reports. Each says what went wrong and what to do; none carries a patient value.
public enum VaultError: Error, Equatable, Sendable, CustomStringConvertible {
    case alreadyExists(String)
    case notAVault(String)
    case unsupportedFormat(Int)
    case corruptConfig(String)
    /// The passphrase (or recovery key) opens no key slot. Deliberately says nothing more.
    case wrongPassphrase
    case passphraseRejected(String)
    case io(IOFailure)
    case catalog(String)
    case notFound(String)
    case crypto(CryptoError)
    /// vault.json's master key does not match the catalog's (a vault.json from another vault or time).
    case keyMismatch
    /// Another process rotated the master key after this one opened the vault.
    case keyRotated
    /// A key-slot operation that would lock everyone out, or names no slot.
    case slotRefused(String)
    /// An erasure committed (keys and rows are gone) but its finishing steps failed; they are retried.
    case erasureUnfinished(String)
    /// A file or record could not be encoded; nothing was written in its place.
    case encoding(JSONEncodingFailure)

    public var description: String {
        switch self {
        case .alreadyExists(let p): "a vault (or other files) already exists at \(p); refusing to overwrite it"
        case .notAVault(let p): "\(p) is not a MedVault vault (no vault.json); create one with `medvault init`"
        case .unsupportedFormat(let v):
            v > VaultConfig.currentFormatVersion
                ? "vault format version \(v) is newer than this medvault reads (\(VaultConfig.currentFormatVersion)); upgrade medvault"
                : "vault format version \(v) predates the key-slot format this medvault reads (\(VaultConfig.currentFormatVersion)); "
                    + "there is no converter: export the studies with the medvault that made it and import them into a new vault"
        case .corruptConfig(let m): "vault.json is damaged: \(m)"
        case .wrongPassphrase: "wrong passphrase or recovery key"
        case .passphraseRejected(let m): m
        case .io(let f): f.description
        case .catalog(let m): "catalog error: \(m)"
        case .notFound(let m): m
        case .crypto(let e): e.description
        case .keyMismatch:
            "vault.json's master key does not match the catalog: vault.json and catalog.sqlite come from different vaults or "
                + "different points in time; restore both from the same backup"
        case .keyRotated: "the vault's master key was rotated by another process after this one opened the vault; run the command again"
        case .slotRefused(let m): m
        case .encoding(let e): "\(e); nothing was written"
        case .erasureUnfinished(let m):
            "the erasure is committed (the patient keys and rows are gone) but finishing it failed: \(m). It is finished by the next "
                + "import, forget or retention run; run the same command again to finish it now"
        }
    }
}

/// One way to unlock the master key: a passphrase (Argon2id) or the printed recovery key.
///
/// Each slot is an X25519 key pair. Its secret half is wrapped by the key derived from the passphrase
/// (or recovery key); the master key is sealed to its public half. So the master key can be sealed to
/// every slot without any slot's passphrase (`key rotate`), and a slot's secret, once the slot is
/// replaced or removed, opens nothing sealed afterwards. See docs/keys.md.
public struct KeySlot: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case passphrase, recovery }
    public struct KDF: Codable, Sendable, Equatable {
        public var algorithm: String  // "argon2id13"
        public var opsLimit: UInt64
        public var memLimit: UInt64
        public var salt: String  // base64

        package init(algorithm: String, opsLimit: UInt64, memLimit: UInt64, salt: String) {
            self.algorithm = algorithm
            self.opsLimit = opsLimit
            self.memLimit = memLimit
            self.salt = salt
        }
    }
    public var id: String
    public var kind: Kind
    public var label: String
    public var createdAt: String
    public var kdf: KDF?
    /// X25519 public key, base64.
    public var publicKey: String
    /// The slot's X25519 secret key, wrapped (XChaCha20-Poly1305) by the passphrase or recovery KEK.
    public var wrappedSecretKey: String
    /// The master key of generation `VaultConfig.keyGeneration`, sealed to `publicKey`.
    public var sealedMasterKey: String
    /// Only while `key rotate` runs: the next master key, sealed to `publicKey`.
    public var pendingSealedMasterKey: String?

    package init(
        id: String, kind: Kind, label: String, createdAt: String, kdf: KDF?, publicKey: String, wrappedSecretKey: String,
        sealedMasterKey: String, pendingSealedMasterKey: String?
    ) {
        self.id = id
        self.kind = kind
        self.label = label
        self.createdAt = createdAt
        self.kdf = kdf
        self.publicKey = publicKey
        self.wrappedSecretKey = wrappedSecretKey
        self.sealedMasterKey = sealedMasterKey
        self.pendingSealedMasterKey = pendingSealedMasterKey
    }
}

public struct VaultConfig: Codable, Sendable, Equatable {
    public static let currentFormatVersion = 2
    public var format: String = "medvault-vault"
    public var formatVersion: Int
    /// Random, identifies this vault in associated data so that keys cannot move between vaults.
    public var vaultID: String
    public var createdAt: String
    public var blobChunkSize: Int
    /// Which master key the slots hold: 1 at `init`, +1 at each `key rotate`.
    public var keyGeneration: Int
    /// Set only between the two steps of a rotation (see `Vault.rotateMasterKey`).
    public var pendingKeyGeneration: Int?
    public var slots: [KeySlot]
    /// Ed25519 public key (base64) that checks backup manifests; see docs/backup.md. Absent in older vaults.
    public var manifestPublicKey: String? = nil
    /// The manifest signing seed wrapped by MK (`ManifestSigningKey`), base64. Absent in older vaults.
    public var wrappedManifestSigningSeed: String? = nil
    /// Only while `key rotate` runs: the seed wrapped by the next master key.
    public var pendingWrappedManifestSigningSeed: String? = nil

    package init(
        formatVersion: Int, vaultID: String, createdAt: String, blobChunkSize: Int, keyGeneration: Int, pendingKeyGeneration: Int?,
        slots: [KeySlot]
    ) {
        self.formatVersion = formatVersion
        self.vaultID = vaultID
        self.createdAt = createdAt
        self.blobChunkSize = blobChunkSize
        self.keyGeneration = keyGeneration
        self.pendingKeyGeneration = pendingKeyGeneration
        self.slots = slots
    }

    package static func load(from path: String) throws(VaultError) -> VaultConfig {
        guard let data = FileManager.default.contents(atPath: path) else { throw .notAVault(parentDirectory(path)) }
        struct Probe: Decodable { var format: String?; var formatVersion: Int? }
        guard let probe = try? JSONDecoder().decode(Probe.self, from: data) else {
            throw .corruptConfig("not valid JSON for a vault configuration")
        }
        guard probe.format == "medvault-vault" else { throw .notAVault(parentDirectory(path)) }
        guard probe.formatVersion == currentFormatVersion else { throw .unsupportedFormat(probe.formatVersion ?? 0) }
        let config: VaultConfig
        do { config = try JSONDecoder().decode(VaultConfig.self, from: data) } catch {
            throw .corruptConfig("not valid JSON for a vault configuration")
        }
        guard !config.slots.isEmpty else { throw .corruptConfig("no key slots") }
        return config
    }

    package func encoded() throws(VaultError) -> [UInt8] {
        do { return try JSONFiles.encode(self, "vault.json", formatting: .prettyPrinted) + [0x0A] } catch { throw .encoding(error) }
    }

    /// Binds a slot's wrapped secret key to the vault and the slot.
    package static func slotSecretAssociatedData(vaultID: String, slotID: String) -> [UInt8] {
        Array("medvault.v2.slot-secret|\(vaultID)|\(slotID)".utf8)
    }

    /// Binds a sealed master key to the vault, the slot and the key generation.
    package static func masterKeyAssociatedData(vaultID: String, slotID: String, generation: Int) -> [UInt8] {
        Array("medvault.v2.master-key|\(vaultID)|\(slotID)|\(generation)".utf8)
    }
}

func parentDirectory(_ path: String) -> String { (path as NSString).deletingLastPathComponent }
