//! JSON parsing: `json <records> <rounds>` generates a JSON array of
//! `records` objects, parses it `rounds` times into a tree (a small
//! hand-written parser: guests use no external crates) and prints a summary.
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug)]
enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Value>),
    Obj(BTreeMap<String, Value>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\n' | b'\t' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Value::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    let v = self.value()?;
                    m.insert(k, v);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Obj(m));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Value::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Arr(v));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Value::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Value::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Value::Null)
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                t.parse()
                    .map(Value::Num)
                    .map_err(|_| format!("bad number {t:?}"))
            }
            None => Err("unexpected end".into()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let c = match self.s.get(self.i + 1) {
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(&c) => c as char,
                        None => return Err("bad escape".into()),
                    };
                    out.push(c);
                    self.i += 2;
                }
                Some(&c) => {
                    out.push(c as char);
                    self.i += 1;
                }
                None => return Err("unterminated string".into()),
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut doc = String::from("[");
    for i in 0..records {
        if i > 0 {
            doc.push(',');
        }
        write!(
            doc,
            "{{\"id\": {i}, \"name\": \"item-{i}\\n\", \"price\": {}.25, \"tags\": [\"a\", \"b{}\"], \
             \"nested\": {{\"ok\": {}, \"none\": null, \"ratio\": -1.5e-3}}}}",
            i % 97,
            i % 7,
            i % 2 == 0
        )
        .unwrap();
    }
    doc.push(']');
    let (mut ids, mut price, mut oks) = (0f64, 0f64, 0usize);
    for _ in 0..rounds {
        let v = Parser {
            s: doc.as_bytes(),
            i: 0,
        }
        .value()
        .expect("valid JSON");
        let Value::Arr(items) = v else {
            panic!("not an array")
        };
        for it in &items {
            let Value::Obj(m) = it else {
                panic!("not an object")
            };
            if let Some(Value::Num(n)) = m.get("id") {
                ids += n;
            }
            if let Some(Value::Num(p)) = m.get("price") {
                price += p;
            }
            if let Some(Value::Obj(n)) = m.get("nested") {
                if let Some(Value::Bool(true)) = n.get("ok") {
                    oks += 1;
                }
                if let (Some(Value::Null), Some(Value::Str(s))) = (n.get("none"), m.get("name")) {
                    ids += (s.len() % 2) as f64;
                }
            }
        }
    }
    println!(
        "json: records={records} rounds={rounds} bytes={} ids={ids} price={price} ok={oks}",
        doc.len()
    );
}
