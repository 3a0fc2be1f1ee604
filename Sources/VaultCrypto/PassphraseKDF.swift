import CSodium

/// Argon2id (libsodium `crypto_pwhash`, ALG_ARGON2ID13) turning a passphrase into a key-encryption key.
public struct Argon2idParameters: Codable, Sendable, Equatable {
    /// Number of passes.
    public var opsLimit: UInt64
    /// Memory in bytes.
    public var memLimit: UInt64

    public init(opsLimit: UInt64, memLimit: UInt64) {
        self.opsLimit = opsLimit
        self.memLimit = memLimit
    }

    /// libsodium's "moderate" profile (3 passes, 256 MiB, ≈0.7 s here): the default for a vault.
    public static let moderate = Argon2idParameters(
        opsLimit: UInt64(crypto_pwhash_opslimit_moderate()), memLimit: UInt64(crypto_pwhash_memlimit_moderate()))
    /// libsodium's "interactive" profile (2 passes, 64 MiB, ≈0.1 s here).
    public static let interactive = Argon2idParameters(
        opsLimit: UInt64(crypto_pwhash_opslimit_interactive()), memLimit: UInt64(crypto_pwhash_memlimit_interactive()))
    /// libsodium's "sensitive" profile (4 passes, 1 GiB).
    public static let sensitive = Argon2idParameters(
        opsLimit: UInt64(crypto_pwhash_opslimit_sensitive()), memLimit: UInt64(crypto_pwhash_memlimit_sensitive()))

    /// Bytes of salt Argon2id takes.
    public static var saltByteCount: Int { Int(crypto_pwhash_saltbytes()) }

    /// Whether libsodium accepts these values (guards against a vault.json edited to absurd limits).
    public var isWithinLibraryBounds: Bool {
        opsLimit >= UInt64(crypto_pwhash_opslimit_min()) && opsLimit <= UInt64(crypto_pwhash_opslimit_max())
            && memLimit >= UInt64(crypto_pwhash_memlimit_min()) && memLimit <= 4 << 30
    }
}

public enum PassphraseKDF {
    /// Derives a 256-bit key from `passphrase` and `salt`.
    public static func deriveKey(
        passphrase: SecureBytes, salt: [UInt8], parameters: Argon2idParameters
    ) throws(CryptoError) -> SymmetricKey {
        try Sodium.ensure()
        guard salt.count == Argon2idParameters.saltByteCount else { throw .malformedInput("Argon2id salt length") }
        guard parameters.isWithinLibraryBounds else { throw .malformedInput("Argon2id parameters out of range") }
        do {
            let key = try SecureBytes(count: SymmetricKey.byteCount) { out in
                let rc = passphrase.withUnsafeBytes { pw in
                    salt.withUnsafeBufferPointer { s in
                        crypto_pwhash(
                            out.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(SymmetricKey.byteCount),
                            pw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt64(pw.count),
                            s.baseAddress!, parameters.opsLimit, Int(parameters.memLimit),
                            crypto_pwhash_alg_argon2id13())
                    }
                }
                if rc != 0 { throw CryptoError.keyDerivationFailed }
            }
            return SymmetricKey(storage: key)
        } catch let e as CryptoError { throw e } catch { throw .secureMemoryUnavailable }
    }
}
