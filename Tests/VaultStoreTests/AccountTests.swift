import VaultCatalog
import Foundation
import Testing
import TestSupport
@testable import VaultStore

@Suite struct AccountTests {
    @Test func usersRolesAndValidation() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try vault.addUser("dr.meier", role: .radiologist)
        try vault.addUser("viewer-1", role: .viewer)
        try vault.addUser("nightly-backup", role: .backup)
        #expect(throws: AccountError.exists("dr.meier")) { try vault.addUser("dr.meier", role: .viewer) }
        for bad in ["", "Dr.Meier", "-x", "a b", "x;drop", String(repeating: "a", count: 65)] {
            #expect(throws: AccountError.invalidName(bad)) { try vault.addUser(bad, role: .viewer) }
        }
        #expect(try vault.listUsers().map(\.name) == ["dr.meier", "nightly-backup", "viewer-1"])
        #expect(try vault.listUsers().first { $0.name == "nightly-backup" }?.role == .backup)
        #expect(throws: AccountError.noSuchUser("nobody")) { try vault.disableUser("nobody") }
    }

    @Test func tokensAuthenticateUntilExpiredRevokedOrDisabled() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try vault.addUser("dr.meier", role: .radiologist)
        let now = Date()
        let (token, info) = try vault.issueToken(for: "dr.meier", lifetime: 3600, now: now)
        #expect(token.hasPrefix("mvt_") && token.count == 4 + 43)
        #expect(try vault.authenticate(token: token, now: now)?.name == "dr.meier")
        #expect(try vault.authenticate(token: token, now: now)?.role == .radiologist)
        // Wrong, malformed, expired: all simply nil.
        #expect(try vault.authenticate(token: token + "x", now: now) == nil)
        #expect(try vault.authenticate(token: "Bearer " + token, now: now) == nil)
        #expect(try vault.authenticate(token: token, now: now.addingTimeInterval(3601)) == nil)
        // The secret is not in the catalog.
        for f in allFiles(under: vault.layout.root) { #expect(!fileContains(f, Array(token.utf8)), "\(f)") }
        // Another process (a second Vault on the same directory) sees revocation at once.
        let other = try Vault.open(at: vault.layout.root, passphrase: try secure(testPassphrase))
        try vault.revokeToken(id: info.id)
        #expect(try other.authenticate(token: token, now: now) == nil)
        #expect(throws: AccountError.noSuchToken(9999)) { try vault.revokeToken(id: 9999) }

        let (t2, _) = try vault.issueToken(for: "dr.meier", lifetime: 3600, now: now)
        let (t3, _) = try vault.issueToken(for: "dr.meier", lifetime: 3600, now: now)
        #expect(try vault.revokeTokens(user: "dr.meier", now: now) == 2)
        #expect(try vault.authenticate(token: t2, now: now) == nil)
        #expect(try vault.authenticate(token: t3, now: now) == nil)

        let (t4, _) = try vault.issueToken(for: "dr.meier", lifetime: 3600, now: now)
        try vault.disableUser("dr.meier")
        #expect(try other.authenticate(token: t4, now: now) == nil)
        #expect(throws: AccountError.disabled("dr.meier")) { try vault.issueToken(for: "dr.meier", lifetime: 60) }
        #expect(try vault.listTokens(user: "dr.meier").allSatisfy { !$0.isActive(at: now) })
    }

    @Test func lifetimesParseAsPeopleWriteThem() throws {
        #expect(try TokenLifetime.parse("8h") == 8 * 3600)
        #expect(try TokenLifetime.parse("30min") == 1800)
        #expect(throws: AccountError.self) { try TokenLifetime.parse("30m") }
        #expect(try TokenLifetime.parse("7d") == 7 * 86_400)
        for bad in ["", "8", "h", "-1h", "0h", "8w", "400d"] {
            #expect(throws: AccountError.self) { try TokenLifetime.parse(bad) }
        }
    }
}
