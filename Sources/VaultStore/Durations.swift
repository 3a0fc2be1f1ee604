// Durations as people type them, with units that cannot be confused: `s`, `min`, `h`, `d`, `w`, `mo`,
// `y`. A bare `m` is refused with a hint: it meant minutes for token lifetimes and audit windows but
// months for retention periods in earlier releases, and a six-minute retention is not a typo to guess at.

/// A duration that is not understood, with what to type instead.
public struct DurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public let text: String
    public let reason: String
    public var description: String { "\"\(text)\": \(reason)" }
}

public enum DurationText {
    /// Fixed-length units in seconds (months and years are calendar units: `RetentionPeriod`).
    static let seconds: [String: Int] = ["s": 1, "min": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400]

    /// Splits `20y` into (20, "y"). `units` are the ones allowed where it is used; `example` shows them.
    static func split(_ text: String, units: [String], example: String) throws(DurationError) -> (count: Int, unit: String) {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = s.prefix { $0.isASCIIDigit }
        let unit = String(s.dropFirst(digits.count))
        if unit == "m" {
            let hint = units.contains("min") ? "\(digits)min for minutes" + (units.contains("mo") ? " or \(digits)mo for months" : "") : "\(digits)mo for months"
            throw DurationError(text: text, reason: "\"m\" could mean minutes or months; write \(hint)")
        }
        guard !digits.isEmpty, digits.count <= 9, let n = Int(digits), n > 0 else {
            throw DurationError(text: text, reason: "expected a whole number and a unit, e.g. \(example)")
        }
        guard units.contains(unit) else {
            throw DurationError(text: text, reason: "unknown unit \"\(unit)\"; use \(units.joined(separator: ", ")), e.g. \(example)")
        }
        return (n, unit)
    }

    /// A span in seconds, in one of the fixed-length `units`.
    public static func seconds(_ text: String, units: [String] = ["s", "min", "h", "d", "w"], example: String = "30min, 8h, 7d") throws(DurationError) -> Double {
        let (n, unit) = try split(text, units: units, example: example)
        return Double(n) * Double(seconds[unit] ?? 0)
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
