// vault.json: the only clear-text file of a vault. It holds parameters and wrapped keys, never a secret.
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

    public var description: String {
        switch self {
        case .alreadyExists(let p): "a vault (or other files) already exists at \(p); refusing to overwrite it"
        case .notAVault(let p): "\(p) is not a MedVault vault (no vault.json); create one with `medvault init`"
        case .unsupportedFormat(let v): "vault format version \(v) is not supported by this medvault; upgrade medvault"
        case .corruptConfig(let m): "vault.json is damaged: \(m)"
        case .wrongPassphrase: "wrong passphrase or recovery key"
        case .passphraseRejected(let m): m
        case .io(let f): f.description
        case .catalog(let m): "catalog error: \(m)"
        case .notFound(let m): m
        case .crypto(let e): e.description
        }
    }
}

/// One way to unlock the master key: a passphrase (Argon2id) or the printed recovery key.
public struct KeySlot: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case passphrase, recovery }
    public struct KDF: Codable, Sendable, Equatable {
        public var algorithm: String  // "argon2id13"
        public var opsLimit: UInt64
        public var memLimit: UInt64
        public var salt: String  // base64
    }
    public var id: String
    public var kind: Kind
    public var label: String
    public var kdf: KDF?
    /// XChaCha20-Poly1305 box of the master key; associated data binds vault id and slot id.
    public var wrappedMasterKey: String  // base64
}

public struct VaultConfig: Codable, Sendable, Equatable {
    public static let currentFormatVersion = 1
    public var format: String = "medvault-vault"
    public var formatVersion: Int
    /// Random, identifies this vault in associated data so that keys cannot move between vaults.
    public var vaultID: String
    public var createdAt: String
    public var blobChunkSize: Int
    public var slots: [KeySlot]
    /// Ed25519 public key (base64) that checks backup manifests; see docs/backup.md. Absent in older vaults.
    public var manifestPublicKey: String? = nil
    /// The manifest signing seed wrapped by MK (`ManifestSigningKey`), base64. Absent in older vaults.
    public var wrappedManifestSigningSeed: String? = nil

    static func load(from path: String) throws(VaultError) -> VaultConfig {
        guard let data = FileManager.default.contents(atPath: path) else { throw .notAVault(parentDirectory(path)) }
        let config: VaultConfig
        do { config = try JSONDecoder().decode(VaultConfig.self, from: data) } catch {
            throw .corruptConfig("not valid JSON for a vault configuration")
        }
        guard config.format == "medvault-vault" else { throw .notAVault(parentDirectory(path)) }
        guard config.formatVersion == currentFormatVersion else { throw .unsupportedFormat(config.formatVersion) }
        guard !config.slots.isEmpty else { throw .corruptConfig("no key slots") }
        return config
    }

    func encoded() -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        // Encoding a struct of strings and integers cannot fail.
        return Array((try? enc.encode(self)) ?? Data()) + [0x0A]
    }

    static func slotAssociatedData(vaultID: String, slotID: String) -> [UInt8] {
        Array("medvault.v1.master-key-slot|\(vaultID)|\(slotID)".utf8)
    }
}

func parentDirectory(_ path: String) -> String { (path as NSString).deletingLastPathComponent }
