//! Tokenizer of the `.kir` text format: sigil names (`%x`, `@c0`, quoted forms), words,
//! numbers, punctuation; `//` comments and all whitespace are skipped. Positions are
//! 1-based line and column in characters, for error messages.

use super::is_plain_name_char;
use crate::error::IrError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// `%name`: a value.
    Value(String),
    /// `@name`: the graph name, a constant reference (`@c0`) or a node name.
    At(String),
    /// An identifier: keywords, op mnemonics, dtypes, attribute names and enum values.
    Word(String),
    /// A number as written (converted later to the type the context asks for, so that an
    /// `f32` attribute is read from the decimal text directly, never through `f64`).
    Number(String),
    /// One of `( ) [ ] { } , : =`.
    Punct(char),
    /// `->`
    Arrow,
    Eof,
}

impl Tok {
    /// How an error message names the token.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Value(n) => format!("'%{}'", super::fmt_name(n)),
            Tok::At(n) => format!("'@{}'", super::fmt_name(n)),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Number(n) => format!("number {n}"),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Arrow => "'->'".to_string(),
            Tok::Eof => "end of input".to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

pub(crate) fn parse_error(line: usize, col: usize, msg: impl Into<String>) -> IrError {
    IrError::Parse {
        line,
        col,
        msg: msg.into(),
    }
}

struct Lexer<'a> {
    /// The input not yet consumed.
    rest: &'a str,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    /// The character after the next one (for `-inf`, `->`, `//`).
    fn peek2(&self) -> Option<char> {
        self.rest.chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let mut it = self.rest.chars();
        let c = it.next()?;
        self.rest = it.as_str();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn skip_trivia(&mut self) -> Result<(), IrError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') => {
                    if self.peek2() != Some('/') {
                        return Err(parse_error(
                            self.line,
                            self.col,
                            "unexpected character '/' (comments start with '//')",
                        ));
                    }
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// The name after a `%` or `@` sigil: bare (`[A-Za-z0-9_.]+`) or a quoted string.
    fn sigil_name(&mut self, sigil: char) -> Result<String, IrError> {
        let (line, col) = (self.line, self.col);
        match self.peek() {
            Some('"') => self.quoted(),
            Some(c) if is_plain_name_char(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek() {
                    if !is_plain_name_char(c) {
                        break;
                    }
                    name.push(c);
                    self.bump();
                }
                Ok(name)
            }
            _ => Err(parse_error(
                line,
                col,
                format!(
                    "expected a name after '{sigil}': letters, digits, '_' and '.', or a quoted string"
                ),
            )),
        }
    }

    fn quoted(&mut self) -> Result<String, IrError> {
        let (line, col) = (self.line, self.col);
        self.bump(); // opening quote
        let mut s = String::new();
        loop {
            let (cl, cc) = (self.line, self.col);
            match self.bump() {
                None | Some('\n') => {
                    return Err(parse_error(
                        line,
                        col,
                        "unterminated quoted name (a '\"' is missing before the end of the line)",
                    ))
                }
                Some('"') => return Ok(s),
                Some('\\') => {
                    match self.bump() {
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some('u') => s.push(self.unicode_escape(cl, cc)?),
                        _ => return Err(parse_error(
                            cl,
                            cc,
                            "unknown escape in quoted name (valid: \\\" \\\\ \\n \\t \\r \\u{hex})",
                        )),
                    }
                }
                Some(c) => s.push(c),
            }
        }
    }

    /// `\u{1f}`: the braces and 1–6 hex digits after `\u`.
    fn unicode_escape(&mut self, line: usize, col: usize) -> Result<char, IrError> {
        let bad = || parse_error(line, col, "malformed \\u{hex} escape in quoted name");
        if self.bump() != Some('{') {
            return Err(bad());
        }
        let mut hex = String::new();
        loop {
            match self.bump() {
                Some('}') => break,
                Some(c) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
                _ => return Err(bad()),
            }
        }
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(bad)
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek() {
            if !(c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            w.push(c);
            self.bump();
        }
        w
    }

    /// Digits with an optional fraction and exponent, or `inf` / `nan`, after an optional
    /// sign. Validity for the target type is checked by the parser.
    fn number(&mut self) -> Result<String, IrError> {
        let (line, col) = (self.line, self.col);
        let mut n = String::new();
        if let Some(sign @ ('-' | '+')) = self.peek() {
            n.push(sign);
            self.bump();
        }
        if self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            let w = self.word();
            if w != "inf" && w != "nan" {
                return Err(parse_error(
                    line,
                    col,
                    format!("expected a number after '{n}', found '{w}'"),
                ));
            }
            n.push_str(&w);
            return Ok(n);
        }
        let digits = |lexer: &mut Lexer, n: &mut String| {
            while let Some(c) = lexer.peek() {
                if !c.is_ascii_digit() {
                    break;
                }
                n.push(c);
                lexer.bump();
            }
        };
        digits(self, &mut n);
        if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
            n.push('.');
            self.bump();
            digits(self, &mut n);
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let after = self.peek2();
            let exponent_follows = after.is_some_and(|c| c.is_ascii_digit())
                || (matches!(after, Some('-' | '+'))
                    && self.rest.chars().nth(2).is_some_and(|c| c.is_ascii_digit()));
            if exponent_follows {
                n.push('e');
                self.bump();
                if let Some(sign @ ('-' | '+')) = self.peek() {
                    n.push(sign);
                    self.bump();
                }
                digits(self, &mut n);
            }
        }
        if !n.chars().any(|c| c.is_ascii_digit()) {
            return Err(parse_error(
                line,
                col,
                format!("expected a number, found '{n}'"),
            ));
        }
        Ok(n)
    }
}

/// Split `src` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, IrError> {
    let mut lx = Lexer {
        rest: src,
        line: 1,
        col: 1,
    };
    let mut tokens = Vec::new();
    loop {
        lx.skip_trivia()?;
        let (line, col) = (lx.line, lx.col);
        let Some(c) = lx.peek() else {
            tokens.push(Token {
                tok: Tok::Eof,
                line,
                col,
            });
            return Ok(tokens);
        };
        let tok = match c {
            '%' => {
                lx.bump();
                Tok::Value(lx.sigil_name('%')?)
            }
            '@' => {
                lx.bump();
                Tok::At(lx.sigil_name('@')?)
            }
            '(' | ')' | '[' | ']' | '{' | '}' | ',' | ':' | '=' => {
                lx.bump();
                Tok::Punct(c)
            }
            '-' if lx.peek2() == Some('>') => {
                lx.bump();
                lx.bump();
                Tok::Arrow
            }
            '-' | '+' => Tok::Number(lx.number()?),
            c if c.is_ascii_digit() => Tok::Number(lx.number()?),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let w = lx.word();
                if w == "inf" || w == "nan" {
                    Tok::Number(w)
                } else {
                    Tok::Word(w)
                }
            }
            other => {
                return Err(parse_error(
                    line,
                    col,
                    format!("unexpected character {other:?}"),
                ))
            }
        };
        tokens.push(Token { tok, line, col });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn splits_sigils_words_numbers_and_punctuation() {
        assert_eq!(
            toks("%x = conv(%\"a/b:c\") {k=[1,-2], e=1e-5, m=-inf} // note\n-> @c0"),
            vec![
                Tok::Value("x".into()),
                Tok::Punct('='),
                Tok::Word("conv".into()),
                Tok::Punct('('),
                Tok::Value("a/b:c".into()),
                Tok::Punct(')'),
                Tok::Punct('{'),
                Tok::Word("k".into()),
                Tok::Punct('='),
                Tok::Punct('['),
                Tok::Number("1".into()),
                Tok::Punct(','),
                Tok::Number("-2".into()),
                Tok::Punct(']'),
                Tok::Punct(','),
                Tok::Word("e".into()),
                Tok::Punct('='),
                Tok::Number("1e-5".into()),
                Tok::Punct(','),
                Tok::Word("m".into()),
                Tok::Punct('='),
                Tok::Number("-inf".into()),
                Tok::Punct('}'),
                Tok::Arrow,
                Tok::At("c0".into()),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn quoted_names_unescape() {
        assert_eq!(
            toks(r#"%"a \"b\" \\ \u{1f} ü""#),
            vec![Tok::Value("a \"b\" \\ \u{1f} ü".into()), Tok::Eof]
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let t = tokenize("// ünïcödé\n  %\"ü\" ?").unwrap_err();
        assert_eq!(
            t,
            parse_error(2, 8, "unexpected character '?'"),
            "'?' is the 8th character of line 2"
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for src in [
            "%",
            "@ x",
            "%\"abc",
            "%\"\\q\"",
            "%\"\\u{zz}\"",
            "-x",
            "/x",
            "1.",
            "$",
        ] {
            // ("1." is the number 1 followed by a stray '.')
            assert!(tokenize(src).is_err(), "{src:?} should not tokenize");
        }
    }
}
