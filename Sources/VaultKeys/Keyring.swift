// The key hierarchy below the master key. See docs/keys.md.
package import VaultCrypto

/// The working keys of an unlocked vault, in two families (see docs/keys.md):
///
/// - from the master key MK (replaced by `key rotate`): catalog sealing, snapshot sealing, and the
///   wrapping of patient keys (MK itself);
/// - from the index key IK (random, made at `init`, stored in the catalog wrapped by MK, rewrapped but
///   never replaced by a rotation): blind indexes, content fingerprints, token hashes and the audit
///   chain. Replacing those would mean decrypting every blob, invalidating every token and rewriting
///   the append-only audit log; what they protect is equality tests, not contents.
///
/// Each is `crypto_kdf` (BLAKE2b) with context "MVaultv1" and its own id; each has one job.
public struct Keyring: Sendable {
    package enum SubkeyID: UInt64 {
        case catalogSeal = 1, blindIndex = 2, auditMAC = 3, snapshot = 4, contentMAC = 5, token = 6, auditSeal = 7
    }

    package let master: SymmetricKey
    package let indexKey: SymmetricKey
    /// Seals catalog records (XChaCha20-Poly1305). From MK.
    package let catalogSeal: SymmetricKey
    /// Keyed BLAKE2b for blind indexes (exact lookups on sealed values). From IK.
    package let blindIndex: SymmetricKey
    /// Keyed BLAKE2b fingerprint of a file's clear bytes (duplicate detection, end-to-end verify). From IK.
    package let contentMAC: SymmetricKey
    /// Keyed BLAKE2b of API bearer tokens (only the hash is stored). From IK.
    package let tokenKey: SymmetricKey
    /// Chains audit records (keyed BLAKE2b over the previous MAC and the record). From IK.
    package let auditMAC: SymmetricKey
    /// Seals audit record bodies (they name patients). From IK.
    package let auditSeal: SymmetricKey

    package init(master: SymmetricKey, indexKey: SymmetricKey) throws(CryptoError) {
        self.master = master
        self.indexKey = indexKey
        catalogSeal = try master.deriveSubkey(id: SubkeyID.catalogSeal.rawValue, context: "MVaultv1")
        blindIndex = try indexKey.deriveSubkey(id: SubkeyID.blindIndex.rawValue, context: "MVaultv1")
        contentMAC = try indexKey.deriveSubkey(id: SubkeyID.contentMAC.rawValue, context: "MVaultv1")
        tokenKey = try indexKey.deriveSubkey(id: SubkeyID.token.rawValue, context: "MVaultv1")
        auditMAC = try indexKey.deriveSubkey(id: SubkeyID.auditMAC.rawValue, context: "MVaultv1")
        auditSeal = try indexKey.deriveSubkey(id: SubkeyID.auditSeal.rawValue, context: "MVaultv1")
    }

    /// Checks which master key the catalog was last written with, without revealing it.
    package static func masterKeyCheck(_ master: SymmetricKey, vaultID: String) -> [UInt8] {
        KeyedHasher.hash(Array("medvault.v2.master-key-check|\(vaultID)".utf8), key: master)
    }

    package static func indexKeyAssociatedData(vaultID: String) -> [UInt8] {
        Array("medvault.v2.index-key|\(vaultID)".utf8)
    }

    /// A blind index: keyed BLAKE2b of a domain tag and the normalised value.
    package func blindIndex(_ domain: BlindDomain, _ normalizedValue: String) -> [UInt8] {
        KeyedHasher.hash(Array("\(domain.rawValue)\u{0}\(normalizedValue)".utf8), key: blindIndex)
    }
}

package enum BlindDomain: String {
    case patientID = "patient-id"
    case patientIDWithIssuer = "patient-id-issuer"
    case patientAnonymous = "patient-anon"
    case patientUnidentified = "patient-unidentified"
    case studyUID = "study-uid"
    case seriesUID = "series-uid"
    case instanceUID = "instance-uid"
    case accession = "accession"
}

/// Normalisation before blind-indexing, so that the same person written in two character sets
/// (ISO_IR 100 vs ISO_IR 192) or with different padding finds the same index.
package enum Normalize {
    /// Identifiers (patient ID, accession, UIDs): trimmed, Unicode NFC; case kept (IDs are case-sensitive).
    package static func identifier(_ s: String) -> String {
        s.trimmingCharacters(in: .whitespaces).precomposedStringWithCanonicalMapping
    }

    /// Person names: NFC, case-folded, trailing empty components and padding removed.
    package static func personName(_ s: String) -> String {
        var parts = s.precomposedStringWithCanonicalMapping.split(separator: "^", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        while let last = parts.last, last.isEmpty { parts.removeLast() }
        return parts.joined(separator: "^").lowercased()
    }
}

import Foundation
