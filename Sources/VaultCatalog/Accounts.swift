// Staff accounts and bearer tokens as catalog rows. Names and roles are in clear (not patient data);
// a token is stored only as a keyed hash, computed by the engine.
public import Foundation
import GRDB

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

    package init(name: String, role: Role, disabled: Bool, createdAt: Date) {
        self.name = name
        self.role = role
        self.disabled = disabled
        self.createdAt = createdAt
    }
}

public struct TokenInfo: Sendable, Equatable {
    /// Short public handle for `token revoke` (not the secret).
    public let id: Int64
    public let user: String
    public let createdAt: Date
    public let expiresAt: Date
    public let revoked: Bool
    public func isActive(at now: Date = Date()) -> Bool { !revoked && now < expiresAt }

    package init(id: Int64, user: String, createdAt: Date, expiresAt: Date, revoked: Bool) {
        self.id = id
        self.user = user
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revoked = revoked
    }
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


extension Catalog {
    package func addAccount(_ name: String, role: Role, createdAt: Date) throws {
        try pool.write { db in
            if try Int64.fetchOne(db, sql: "SELECT id FROM account WHERE name = ?", arguments: [name]) != nil {
                throw AccountError.exists(name)
            }
            try db.execute(
                sql: "INSERT INTO account(name, role, disabled, createdAt) VALUES (?, ?, 0, ?)",
                arguments: [name, role.rawValue, Int64(createdAt.timeIntervalSince1970)])
        }
    }

    package func accounts() throws -> [UserAccount] {
        try pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM account ORDER BY name").map(Self.account) }
    }

    /// Disables an account and revokes its tokens in one transaction.
    package func disableAccount(_ name: String) throws {
        try pool.write { db in
            guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM account WHERE name = ?", arguments: [name]) else {
                throw AccountError.noSuchUser(name)
            }
            try db.execute(sql: "UPDATE account SET disabled = 1 WHERE id = ?", arguments: [id])
            try db.execute(sql: "UPDATE token SET revoked = 1 WHERE accountID = ?", arguments: [id])
        }
    }

    /// Stores a token's keyed hash for an enabled account; returns the token's id.
    package func addToken(for name: String, hash: [UInt8], createdAt: Date, expiresAt: Date) throws -> Int64 {
        try pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT id, disabled FROM account WHERE name = ?", arguments: [name]) else {
                throw AccountError.noSuchUser(name)
            }
            if (row["disabled"] as Int) != 0 { throw AccountError.disabled(name) }
            try db.execute(
                sql: "INSERT INTO token(accountID, hash, createdAt, expiresAt, revoked) VALUES (?, ?, ?, ?, 0)",
                arguments: [
                    row["id"] as Int64, Data(hash), Int64(createdAt.timeIntervalSince1970), Int64(expiresAt.timeIntervalSince1970),
                ])
            return db.lastInsertedRowID
        }
    }

    package func tokens(user: String?) throws -> [TokenInfo] {
        try pool.read { db in
            let sql = """
                SELECT t.*, a.name AS user FROM token t JOIN account a ON a.id = t.accountID
                \(user == nil ? "" : "WHERE a.name = ?") ORDER BY t.id
                """
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(user.map { [$0] } ?? [])).map(Self.tokenInfo)
        }
    }

    package func revokeToken(id: Int64) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE token SET revoked = 1 WHERE id = ?", arguments: [id])
            if db.changesCount == 0 { throw AccountError.noSuchToken(id) }
        }
    }

    /// Revokes the account's tokens still active at `now`; returns how many.
    package func revokeTokens(user name: String, now: Date) throws -> Int {
        try pool.write { db in
            guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM account WHERE name = ?", arguments: [name]) else {
                throw AccountError.noSuchUser(name)
            }
            try db.execute(
                sql: "UPDATE token SET revoked = 1 WHERE accountID = ? AND revoked = 0 AND expiresAt > ?",
                arguments: [id, Int64(now.timeIntervalSince1970)])
            return db.changesCount
        }
    }

    /// The enabled account holding an unrevoked, unexpired token with this hash.
    package func account(tokenHash hash: [UInt8], now: Date) throws -> UserAccount? {
        try pool.read { db in
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
