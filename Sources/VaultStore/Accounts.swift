// Accounts for the local API (issue 3): one per person or job, never shared, each with one role.
// Tokens are random 256-bit bearer secrets shown once; the catalog keeps only a keyed hash.
public import VaultAudit
public import Foundation
public import VaultCatalog
import VaultCrypto

/// Token lifetimes as people write them: 30min, 8h, 7d (`DurationText`).
public enum TokenLifetime {
    public static let maximum: TimeInterval = 366 * 86_400

    /// A lifetime as `parse` reads it: `8h`, `7d`, `30min`.
    static func describe(_ seconds: TimeInterval) -> String {
        let s = Int(seconds)
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("min", 60)] where s >= size && s % size == 0 { return "\(s / size)\(unit)" }
        return "\(s)s"
    }

    public static func parse(_ text: String) throws(AccountError) -> TimeInterval {
        let seconds: TimeInterval
        do { seconds = try DurationText.seconds(text, units: ["s", "min", "h", "d"], example: "30min, 8h, 7d") } catch {
            throw .invalidLifetime("invalid lifetime \(error)")
        }
        guard seconds <= maximum else { throw .invalidLifetime("a token may live at most 366 days") }
        return seconds
    }
}

extension Vault {
    static func validAccountName(_ name: String) -> Bool {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._-")
        guard let first = name.first, name.count <= 64, first.isLetter || first.isNumber else { return false }
        return name.allSatisfy { allowed.contains($0) }
    }

    /// An account or token change: one catalog transaction, as a change by `actor` (`Vault.change`).
    private func accountChange<R: Sendable>(
        _ action: AuditAction, by actor: AuditActor, detail: () -> String, _ body: () throws -> R
    ) throws -> R {
        try change(action, by: actor) { report in
            let value = try body()
            report.wroteVault = true
            report.detail = detail()
            return value
        }
    }

    /// The keyed hash a token is stored as. Tokens are 256-bit random, so the hash needs no stretching;
    /// the key keeps a stolen catalog from confirming a token offline.
    func tokenHash(_ token: String) -> [UInt8] {
        KeyedHasher.hash(Array("medvault.v1.token|\(token)".utf8), key: keyring.tokenKey)
    }

    public func addUser(_ name: String, role: Role, now: Date = Date(), by actor: AuditActor = .currentProcess) throws {
        guard Self.validAccountName(name) else { throw AccountError.invalidName(name) }
        try accountChange(.userAdd, by: actor, detail: { "\(name) as \(role.rawValue)" }) {
            try catalog.addAccount(name, role: role, createdAt: now)
        }
    }

    public func listUsers() throws -> [UserAccount] { try catalog.accounts() }

    /// Disables an account and revokes its tokens, at once (a running server re-reads on every request).
    public func disableUser(_ name: String, by actor: AuditActor = .currentProcess) throws {
        try accountChange(.userDisable, by: actor, detail: { name }) { try catalog.disableAccount(name) }
    }

    /// Issues a bearer token for `name`. The secret is returned once and never stored.
    public func issueToken(
        for name: String, lifetime: TimeInterval, now: Date = Date(), by actor: AuditActor = .currentProcess
    ) throws -> (token: String, info: TokenInfo) {
        let token = "mvt_" + base64URL(secureRandomBytes(32))
        let hash = tokenHash(token)
        let expires = now.addingTimeInterval(lifetime)
        var issued: Int64 = 0
        let id: Int64 = try accountChange(.tokenIssue, by: actor, detail: { "token \(issued) for \(name), \(TokenLifetime.describe(lifetime))" }) {
            issued = try catalog.addToken(for: name, hash: hash, createdAt: now, expiresAt: expires)
            return issued
        }
        return (token, TokenInfo(
            id: id, user: name, createdAt: Date(timeIntervalSince1970: Double(Int64(now.timeIntervalSince1970))),
            expiresAt: Date(timeIntervalSince1970: Double(Int64(expires.timeIntervalSince1970))), revoked: false))
    }

    public func listTokens(user: String? = nil) throws -> [TokenInfo] { try catalog.tokens(user: user) }

    public func revokeToken(id: Int64, by actor: AuditActor = .currentProcess) throws {
        try accountChange(.tokenRevoke, by: actor, detail: { "token \(id)" }) { try catalog.revokeToken(id: id) }
    }

    /// Revokes every token of an account; returns how many were active.
    @discardableResult
    public func revokeTokens(user name: String, now: Date = Date(), by actor: AuditActor = .currentProcess) throws -> Int {
        var revoked = 0
        return try accountChange(.tokenRevoke, by: actor, detail: { "\(revoked) token(s) of \(name)" }) {
            revoked = try catalog.revokeTokens(user: name, now: now)
            return revoked
        }
    }

    /// The account a bearer token belongs to, or nil — for a wrong, expired or revoked token, or a
    /// disabled account alike (callers must not tell which). Read fresh on every call, so changes made
    /// by another process take effect at once.
    public func authenticate(token: String, now: Date = Date()) throws -> UserAccount? {
        guard token.hasPrefix("mvt_"), token.utf8.count < 100 else { return nil }
        return try catalog.account(tokenHash: tokenHash(token), now: now)
    }
}

/// Base64url without padding (RFC 4648 §5): safe in an HTTP header and a shell.
func base64URL(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}
