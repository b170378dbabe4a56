//! A small s-expression reader for rule files: atoms, strings, lists, `;` comments, and a
//! line:column on every item so that errors point into the file.

use std::fmt;

/// Position in a file, 1-based.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Sexp {
    Atom(String, Pos),
    Str(String, Pos),
    List(Vec<Sexp>, Pos),
}

impl Sexp {
    pub fn pos(&self) -> Pos {
        match self {
            Sexp::Atom(_, p) | Sexp::Str(_, p) | Sexp::List(_, p) => *p,
        }
    }

    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Sexp::Atom(a, _) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Sexp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sexp::Atom(a, _) => f.write_str(a),
            Sexp::Str(s, _) => write!(f, "{s:?}"),
            Sexp::List(items, _) => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A reader error at a position.
#[derive(Clone, Debug, PartialEq)]
pub struct SexpError {
    pub pos: Pos,
    pub msg: String,
}

/// Read every top-level form of `text`.
pub fn parse_all(text: &str) -> Result<Vec<Sexp>, SexpError> {
    let mut reader = Reader {
        chars: text.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
    };
    let mut forms = Vec::new();
    loop {
        reader.skip_space();
        if reader.peek().is_none() {
            return Ok(forms);
        }
        forms.push(reader.read()?);
    }
}

struct Reader {
    chars: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == ';' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn read(&mut self) -> Result<Sexp, SexpError> {
        self.skip_space();
        let start = self.pos();
        match self.peek() {
            None => Err(SexpError {
                pos: start,
                msg: "unexpected end of file".into(),
            }),
            Some('(') => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek() {
                        None => {
                            return Err(SexpError {
                                pos: start,
                                msg: "this '(' is never closed".into(),
                            })
                        }
                        Some(')') => {
                            self.bump();
                            return Ok(Sexp::List(items, start));
                        }
                        Some(_) => items.push(self.read()?),
                    }
                }
            }
            Some(')') => Err(SexpError {
                pos: start,
                msg: "unexpected ')'".into(),
            }),
            Some('"') => {
                self.bump();
                let mut s = String::new();
                loop {
                    match self.bump() {
                        None => {
                            return Err(SexpError {
                                pos: start,
                                msg: "unterminated string".into(),
                            })
                        }
                        Some('"') => return Ok(Sexp::Str(s, start)),
                        Some('\\') => match self.bump() {
                            Some(c @ ('"' | '\\')) => s.push(c),
                            Some('n') => s.push('\n'),
                            _ => {
                                return Err(SexpError {
                                    pos: self.pos(),
                                    msg: "unknown escape in string".into(),
                                })
                            }
                        },
                        Some(c) => s.push(c),
                    }
                }
            }
            Some(_) => {
                let mut a = String::new();
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == ';' || c == '"' {
                        break;
                    }
                    a.push(c);
                    self.bump();
                }
                Ok(Sexp::Atom(a, start))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_atoms_strings_and_skips_comments() {
        let forms = parse_all("; header\n(a (b \"c d\") ?x) ; trailing\n(e)").unwrap();
        assert_eq!(forms.len(), 2);
        assert_eq!(forms[0].to_string(), "(a (b \"c d\") ?x)");
        assert_eq!(forms[0].pos(), Pos { line: 2, col: 1 });
        let Sexp::List(items, _) = &forms[0] else {
            panic!()
        };
        assert_eq!(items[1].pos(), Pos { line: 2, col: 4 });
    }

    #[test]
    fn unbalanced_parentheses_point_at_the_open_paren() {
        let err = parse_all("(a\n  (b c)\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 1, col: 1 });
        let err = parse_all("(a))").unwrap_err();
        assert_eq!(err.pos, Pos { line: 1, col: 4 });
    }
}
