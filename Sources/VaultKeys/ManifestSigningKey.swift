// The vault's manifest signing key, wrapped by the master key in vault.json.
import Foundation
public import VaultCrypto
public import VaultFormats

/// The vault's Ed25519 manifest signing key: a 32-byte seed wrapped by MK in vault.json, the public
/// half next to it in clear. One place for wrap and unwrap, so that `key rotate` can rewrap it.
package enum ManifestSigningKey {
    package static func associatedData(vaultID: String) -> [UInt8] {
        Array("medvault.v1.manifest-signing-key|\(vaultID)".utf8)
    }

    package static func wrap(seed: SymmetricKey, master: SymmetricKey, vaultID: String) -> String {
        Data(KeyWrap.wrap(seed, with: master, associatedData: associatedData(vaultID: vaultID))).base64EncodedString()
    }

    package static func unwrap(_ wrapped: String, master: SymmetricKey, vaultID: String) throws(VaultError) -> SymmetricKey {
        guard let box = Data(base64Encoded: wrapped) else { throw .corruptConfig("wrappedManifestSigningSeed is not base64") }
        do { return try KeyWrap.unwrap(Array(box), with: master, associatedData: associatedData(vaultID: vaultID)) } catch {
            throw .crypto(error)
        }
    }

    /// A fresh key pair: the wrapped seed and the public key are written into `config`.
    package static func install(in config: inout VaultConfig, master: SymmetricKey) throws(VaultError) {
        do {
            let seed = try SymmetricKey.random()
            let key = try Ed25519SigningKey(seed: seed)
            config.wrappedManifestSigningSeed = wrap(seed: seed, master: master, vaultID: config.vaultID)
            config.manifestPublicKey = key.publicKey.base64
        } catch { throw .crypto(error) }
    }

    /// The signing key of `config`, checked against its published public key.
    package static func signingKey(_ config: VaultConfig, master: SymmetricKey) throws(SnapshotError) -> Ed25519SigningKey {
        guard let wrapped = config.wrappedManifestSigningSeed, let published = config.manifestPublicKey.flatMap(Ed25519PublicKey.init(base64:))
        else { throw .signingKeyMismatch("vault.json lacks the signing key fields") }
        let key: Ed25519SigningKey
        do {
            let seed = try unwrap(wrapped, master: master, vaultID: config.vaultID)
            key = try Ed25519SigningKey(seed: seed)
        } catch {
            throw .signingKeyMismatch("the wrapped seed in vault.json does not open with this process's master key (were the keys rotated meanwhile?)")
        }
        guard key.publicKey == published else { throw .signingKeyMismatch("manifestPublicKey in vault.json is not the wrapped seed's") }
        return key
    }
}
