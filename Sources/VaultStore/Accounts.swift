// Accounts for the local API (issue 3): one per person or job, never shared, each with one role.
// Tokens are random 256-bit bearer secrets shown once; the catalog keeps only a keyed hash.
public import Foundation
import GRDB
import VaultCrypto

public enum Role: String, Sendable, CaseIterable, Codable {
    /// Everything, including accounts.
    case admin
    /// Imports and reads.
    case radiologist
    /// Reads only.
    case viewer
    /// Copies encrypted blobs; never receives decrypted data.
    case backup
}

public struct UserAccount: Sendable, Equatable {
    public let name: String
    public let role: Role
    public let disabled: Bool
    public let createdAt: Date
}

public struct TokenInfo: Sendable, Equatable {
    /// Short public handle for `token revoke` (not the secret).
    public let id: Int64
    public let user: String
    public let createdAt: Date
    public let expiresAt: Date
    public let revoked: Bool
    public func isActive(at now: Date = Date()) -> Bool { !revoked && now < expiresAt }
}

public enum AccountError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidName(String)
    case exists(String)
    case noSuchUser(String)
    case noSuchToken(Int64)
    case disabled(String)
    case invalidLifetime(String)

    public var description: String {
        switch self {
        case .invalidName(let n): "invalid account name \"\(n)\": use 1–64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        case .exists(let n): "an account named \(n) already exists"
        case .noSuchUser(let n): "no account named \(n)"
        case .noSuchToken(let id): "no token with id \(id)"
        case .disabled(let n): "account \(n) is disabled"
        case .invalidLifetime(let m): m
        }
    }
}

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
        _ action: AuditAction, by actor: AuditActor, detail: () -> String, _ body: (Database) throws -> R
    ) throws -> R {
        try change(action, by: actor) { report in
            let value = try catalog.pool.write { db in try body(db) }
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
        try accountChange(.userAdd, by: actor, detail: { "\(name) as \(role.rawValue)" }) { db in
            if try Int64.fetchOne(db, sql: "SELECT id FROM account WHERE name = ?", arguments: [name]) != nil {
                throw AccountError.exists(name)
            }
            try db.execute(
                sql: "INSERT INTO account(name, role, disabled, createdAt) VALUES (?, ?, 0, ?)",
                arguments: [name, role.rawValue, Int64(now.timeIntervalSince1970)])
        }
    }

    public func listUsers() throws -> [UserAccount] {
        try catalog.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM account ORDER BY name").map(Self.account)
        }
    }

    /// Disables an account and revokes its tokens, at once (a running server re-reads on every request).
    public func disableUser(_ name: String, by actor: AuditActor = .currentProcess) throws {
        try accountChange(.userDisable, by: actor, detail: { name }) { db in
            guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM account WHERE name = ?", arguments: [name]) else {
                throw AccountError.noSuchUser(name)
            }
            try db.execute(sql: "UPDATE account SET disabled = 1 WHERE id = ?", arguments: [id])
            try db.execute(sql: "UPDATE token SET revoked = 1 WHERE accountID = ?", arguments: [id])
        }
    }

    /// Issues a bearer token for `name`. The secret is returned once and never stored.
    public func issueToken(
        for name: String, lifetime: TimeInterval, now: Date = Date(), by actor: AuditActor = .currentProcess
    ) throws -> (token: String, info: TokenInfo) {
        let token = "mvt_" + base64URL(secureRandomBytes(32))
        let hash = tokenHash(token)
        let expires = now.addingTimeInterval(lifetime)
        var issued: Int64 = 0
        let id: Int64 = try accountChange(.tokenIssue, by: actor, detail: { "token \(issued) for \(name), \(TokenLifetime.describe(lifetime))" }) { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT id, disabled FROM account WHERE name = ?", arguments: [name]) else {
                throw AccountError.noSuchUser(name)
            }
            if (row["disabled"] as Int) != 0 { throw AccountError.disabled(name) }
            try db.execute(
                sql: "INSERT INTO token(accountID, hash, createdAt, expiresAt, revoked) VALUES (?, ?, ?, ?, 0)",
                arguments: [row["id"] as Int64, Data(hash), Int64(now.timeIntervalSince1970), Int64(expires.timeIntervalSince1970)])
            issued = db.lastInsertedRowID
            return issued
        }
        return (token, TokenInfo(
            id: id, user: name, createdAt: Date(timeIntervalSince1970: Double(Int64(now.timeIntervalSince1970))),
            expiresAt: Date(timeIntervalSince1970: Double(Int64(expires.timeIntervalSince1970))), revoked: false))
    }

    public func listTokens(user: String? = nil) throws -> [TokenInfo] {
        try catalog.pool.read { db in
            let sql = """
                SELECT t.*, a.name AS user FROM token t JOIN account a ON a.id = t.accountID
                \(user == nil ? "" : "WHERE a.name = ?") ORDER BY t.id
                """
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(user.map { [$0] } ?? [])).map(Self.tokenInfo)
        }
    }

    public func revokeToken(id: Int64, by actor: AuditActor = .currentProcess) throws {
        try accountChange(.tokenRevoke, by: actor, detail: { "token \(id)" }) { db in
            try db.execute(sql: "UPDATE token SET revoked = 1 WHERE id = ?", arguments: [id])
            if db.changesCount == 0 { throw AccountError.noSuchToken(id) }
        }
    }

    /// Revokes every token of an account; returns how many were active.
    @discardableResult
    public func revokeTokens(user name: String, now: Date = Date(), by actor: AuditActor = .currentProcess) throws -> Int {
        var revoked = 0
        return try accountChange(.tokenRevoke, by: actor, detail: { "\(revoked) token(s) of \(name)" }) { db in
            guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM account WHERE name = ?", arguments: [name]) else {
                throw AccountError.noSuchUser(name)
            }
            try db.execute(
                sql: "UPDATE token SET revoked = 1 WHERE accountID = ? AND revoked = 0 AND expiresAt > ?",
                arguments: [id, Int64(now.timeIntervalSince1970)])
            revoked = db.changesCount
            return revoked
        }
    }

    /// The account a bearer token belongs to, or nil — for a wrong, expired or revoked token, or a
    /// disabled account alike (callers must not tell which). Read fresh on every call, so changes made
    /// by another process take effect at once.
    public func authenticate(token: String, now: Date = Date()) throws -> UserAccount? {
        guard token.hasPrefix("mvt_"), token.utf8.count < 100 else { return nil }
        let hash = tokenHash(token)
        return try catalog.pool.read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT a.* FROM token t JOIN account a ON a.id = t.accountID
                    WHERE t.hash = ? AND t.revoked = 0 AND t.expiresAt > ? AND a.disabled = 0
                    """, arguments: [Data(hash), Int64(now.timeIntervalSince1970)]
            ).map(Self.account)
        }
    }

    static func account(_ r: Row) -> UserAccount {
        UserAccount(
            name: r["name"], role: Role(rawValue: r["role"]) ?? .viewer, disabled: (r["disabled"] as Int) != 0,
            createdAt: Date(timeIntervalSince1970: Double(r["createdAt"] as Int64)))
    }

    static func tokenInfo(_ r: Row) -> TokenInfo {
        TokenInfo(
            id: r["id"], user: r["user"], createdAt: Date(timeIntervalSince1970: Double(r["createdAt"] as Int64)),
            expiresAt: Date(timeIntervalSince1970: Double(r["expiresAt"] as Int64)), revoked: (r["revoked"] as Int) != 0)
    }
}

/// Base64url without padding (RFC 4648 §5): safe in an HTTP header and a shell.
func base64URL(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}
