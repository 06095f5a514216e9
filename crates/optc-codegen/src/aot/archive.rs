//! A static archive holding the object, for linkers.

/// A GNU `ar` archive holding `object` as member `member_name`, with a symbol index of
/// `symbols` (so linkers find them) and fixed timestamps/owners (reproducible).
pub fn static_archive(member_name: &str, object: &[u8], symbols: &[String]) -> Vec<u8> {
    fn header(out: &mut Vec<u8>, name: &str, size: usize) {
        let h = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name, 0, 0, 0, 644, size
        );
        debug_assert_eq!(h.len(), 60);
        out.extend_from_slice(h.as_bytes());
    }
    let mut names = Vec::new();
    for s in symbols {
        names.extend_from_slice(s.as_bytes());
        names.push(0);
    }
    let symtab_len = 4 + 4 * symbols.len() + names.len();
    let symtab_pad = symtab_len % 2;
    // Member names longer than 15 chars would need a `//` table: shorten.
    let mut member: String = member_name.chars().take(15).collect();
    member.push('/');
    let obj_offset = 8 + 60 + symtab_len + symtab_pad;
    let mut out = b"!<arch>\n".to_vec();
    header(&mut out, "/", symtab_len);
    out.extend_from_slice(&(symbols.len() as u32).to_be_bytes());
    for _ in symbols {
        out.extend_from_slice(&(obj_offset as u32).to_be_bytes());
    }
    out.extend_from_slice(&names);
    if symtab_pad == 1 {
        out.push(b'\n');
    }
    header(&mut out, &member, object.len());
    out.extend_from_slice(object);
    if object.len() % 2 == 1 {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_layout() {
        let a = static_archive("x.o", b"abc", &["f".to_string(), "gg".to_string()]);
        assert!(a.starts_with(b"!<arch>\n/               0   "));
        // symtab: 4 + 8 + 5 = 17 bytes, padded to 18.
        let obj = 8 + 60 + 18;
        assert_eq!(&a[8 + 60..8 + 64], &2u32.to_be_bytes());
        assert_eq!(&a[8 + 64..8 + 68], &(obj as u32).to_be_bytes());
        assert_eq!(&a[obj..obj + 16], b"x.o/            ");
        assert_eq!(&a[obj + 60..obj + 63], b"abc");
        assert_eq!(a.len() % 2, 0);
    }
}
