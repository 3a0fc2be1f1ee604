// `medvault user …` and `medvault token …`: accounts for the local API. They change the catalog
// directly (so they need the passphrase) and a running server sees the change on its next request.
import VaultCatalog
import ArgumentParser
import Foundation
import VaultStore

enum RoleChoice: String, ExpressibleByArgument, CaseIterable {
    case admin, radiologist, viewer, backup
    var role: Role { Role(rawValue: rawValue) ?? .viewer }
}

struct User: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage accounts: one per person or job, never shared.",
        subcommands: [Add.self, ListUsers.self, Disable.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account with a role.")
        @OptionGroup var options: VaultOptions
        @Argument(help: "Account name (a-z, 0-9, '.', '_', '-').") var name: String
        @Option(help: "admin, radiologist (import and read), viewer (read), backup (encrypted blobs only).")
        var role: RoleChoice

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                try MedVault.change { try vault.addUser(name, role: role.role) }
                print("added \(name) (\(role.rawValue))")
            }
        }
    }

    struct ListUsers: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List accounts.")
        @OptionGroup var options: VaultOptions
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let users = try options.open().listUsers()
                if json {
                    Console.json(users.map { ["name": $0.name, "role": $0.role.rawValue, "disabled": $0.disabled,
                                              "created": ISO8601DateFormatter().string(from: $0.createdAt)] as [String: Any] })
                } else {
                    print(Format.table(["NAME", "ROLE", "STATE", "CREATED"], users.map {
                        [$0.name, $0.role.rawValue, $0.disabled ? "disabled" : "active", ISO8601DateFormatter().string(from: $0.createdAt)]
                    }))
                }
            }
        }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable an account and revoke its tokens.")
        @OptionGroup var options: VaultOptions
        @Argument var name: String

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                try MedVault.change { try vault.disableUser(name) }
                print("disabled \(name); its tokens are revoked")
            }
        }
    }
}

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Issue, list and revoke API bearer tokens.", subcommands: [Issue.self, ListTokens.self, Revoke.self])

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a token for an account. It is printed once and stored only as a keyed hash.")
        @OptionGroup var options: VaultOptions
        @Argument var name: String
        @Option(help: "Lifetime: 30min, 8h (default), 7d; at most 366d.") var expires = "8h"
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let lifetime = try TokenLifetime.parse(expires)
                let vault = try options.open()
                let (token, info) = try MedVault.change { try vault.issueToken(for: name, lifetime: lifetime) }.value
                let until = ISO8601DateFormatter().string(from: info.expiresAt)
                if json {
                    Console.json(["token": token, "id": info.id, "user": name, "expires": until])
                } else {
                    print("token for \(name) (id \(info.id), expires \(until)); shown once:\n\n    \(token)\n")
                }
            }
        }
    }

    struct ListTokens: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List tokens (never their secrets).")
        @OptionGroup var options: VaultOptions
        @Argument(help: "Only this account's tokens.") var name: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let tokens = try options.open().listTokens(user: name)
                let f = ISO8601DateFormatter()
                func state(_ t: TokenInfo) -> String { t.revoked ? "revoked" : t.isActive() ? "active" : "expired" }
                if json {
                    Console.json(tokens.map { ["id": $0.id, "user": $0.user, "created": f.string(from: $0.createdAt),
                                               "expires": f.string(from: $0.expiresAt), "state": state($0)] as [String: Any] })
                } else {
                    print(Format.table(["ID", "USER", "STATE", "CREATED", "EXPIRES"], tokens.map {
                        ["\($0.id)", $0.user, state($0), f.string(from: $0.createdAt), f.string(from: $0.expiresAt)]
                    }))
                }
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke one token by id, or every token of an account.")
        @OptionGroup var options: VaultOptions
        @Argument(help: "The token id (see `token list`).") var id: Int64?
        @Option(help: "Revoke every token of this account.") var user: String?

        func validate() throws {
            if (id == nil) == (user == nil) { throw ValidationError("give a token id or --user NAME") }
        }

        func run() throws {
            try MedVault.guarded {
                let vault = try options.open()
                if let id {
                    try MedVault.change { try vault.revokeToken(id: id) }
                    print("revoked token \(id)")
                } else if let user {
                    let n = try MedVault.change { try vault.revokeTokens(user: user) }.value
                    print("revoked \(n) active token(s) of \(user)")
                }
            }
        }
    }
}
