// QIDO-RS matching rules (PS3.4 C.2.2.2): wildcards, lists, date and time ranges, person names.
import Foundation

/// `*` matches any run of characters, `?` exactly one.
enum Wildcard {
    static func matches(pattern: String, _ value: String, caseSensitive: Bool = false) -> Bool {
        let p = Array(caseSensitive ? pattern : pattern.lowercased()), v = Array(caseSensitive ? value : value.lowercased())
        var pi = 0, vi = 0, star = -1, mark = 0
        while vi < v.count {
            if pi < p.count && (p[pi] == "?" || p[pi] == v[vi]) {
                pi += 1; vi += 1
            } else if pi < p.count && p[pi] == "*" {
                star = pi; mark = vi; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; vi = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == "*" { pi += 1 }
        return pi == p.count
    }

    static func hasWildcard(_ s: String) -> Bool { s.contains("*") || s.contains("?") }
}

/// A person name's component groups (PS3.5 6.2.1): `Yamada^Tarou=山田^太郎=やまだ^たろう`.
struct PersonName: Equatable {
    var alphabetic = "", ideographic = "", phonetic = ""

    init(_ value: String) {
        let groups = value.split(separator: "=", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        alphabetic = groups[0]
        if groups.count > 1 { ideographic = groups[1] }
        if groups.count > 2 { phonetic = groups[2] }
    }

    /// A pattern matches the whole value or any one group, case-insensitively, so that `*山田*` and
    /// `Yamada*` both find `Yamada^Tarou=山田^太郎`.
    static func matches(pattern: String, _ value: String) -> Bool {
        if Wildcard.matches(pattern: pattern, value) { return true }
        let n = PersonName(value)
        return [n.alphabetic, n.ideographic, n.phonetic].contains { !$0.isEmpty && Wildcard.matches(pattern: pattern, $0) }
    }
}

/// A DICOM date or date range: `YYYYMMDD`, `A-B`, `A-`, `-B`.
struct DateRange {
    let from: String?
    let to: String?

    init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        func valid(_ s: String) -> Bool { s.count == 8 && s.allSatisfy(\.isASCII) && s.allSatisfy(\.isNumber) }
        switch parts.count {
        case 1 where valid(parts[0]): (from, to) = (parts[0], parts[0])
        case 2 where (parts[0].isEmpty || valid(parts[0])) && (parts[1].isEmpty || valid(parts[1])) && parts != ["", ""]:
            (from, to) = (parts[0].isEmpty ? nil : parts[0], parts[1].isEmpty ? nil : parts[1])
        default: return nil
        }
    }

    func contains(_ date: String) -> Bool {
        guard !date.isEmpty else { return false }
        if let from, date < from { return false }
        if let to, date > to { return false }
        return true
    }
}

/// A DICOM time or time range (TM): `HH[MM[SS[.F{1,6}]]]`, `A-B`, `A-`, `-B`. A partial time stands for
/// the whole hour or minute: `10-11` is 10:00:00 to 11:59:59.999999, and `1030` alone is that minute.
struct TimeRange {
    let from: String?
    let to: String?

    init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        switch parts.count {
        case 1:
            guard let a = Self.normalize(parts[0], upper: false), let b = Self.normalize(parts[0], upper: true) else { return nil }
            (from, to) = (a, b)
        case 2 where parts != ["", ""]:
            let a = parts[0].isEmpty ? nil : Self.normalize(parts[0], upper: false)
            let b = parts[1].isEmpty ? nil : Self.normalize(parts[1], upper: true)
            guard parts[0].isEmpty || a != nil, parts[1].isEmpty || b != nil else { return nil }
            (from, to) = (a, b)
        default: return nil
        }
    }

    func contains(_ time: String) -> Bool {
        guard let t = Self.normalize(time.trimmingCharacters(in: .whitespaces), upper: false) else { return false }
        if let from, t < from { return false }
        if let to, t > to { return false }
        return true
    }

    /// `HHMMSS.FFFFFF`, the missing parts filled with their lowest (or, for an upper bound, highest) value.
    /// Colons (the old ACR-NEMA form, `10:30:00`) are accepted. Nil when not a time.
    static func normalize(_ text: String, upper: Bool) -> String? {
        let s = text.replacingOccurrences(of: ":", with: "")
        let dot = s.firstIndex(of: ".")
        let whole = dot.map { String(s[..<$0]) } ?? s
        let fraction = dot.map { String(s[s.index(after: $0)...]) } ?? ""
        let digits: (String) -> Bool = { $0.allSatisfy { $0.isASCII && $0.isNumber } }
        guard [2, 4, 6].contains(whole.count), digits(whole), fraction.count <= 6, digits(fraction),
            dot == nil || (whole.count == 6 && !fraction.isEmpty)
        else { return nil }
        let fields = stride(from: 0, to: whole.count, by: 2).map { i -> Int in
            let start = whole.index(whole.startIndex, offsetBy: i)
            return Int(whole[start..<whole.index(start, offsetBy: 2)]) ?? 99
        }
        guard fields[0] < 24, fields.count < 2 || fields[1] < 60, fields.count < 3 || fields[2] < 61 else { return nil }
        let fill: Character = upper ? "9" : "0"
        var out = whole
        if whole.count < 6 { out += upper ? String("595959".suffix(6 - whole.count)) : String(repeating: "0", count: 6 - whole.count) }
        return out + "." + fraction + String(repeating: fill, count: 6 - fraction.count)
    }
}
