//! A pre-scan of pickle opcodes that bounds what the pickle parser will build.
//!
//! serde-pickle 1.2 builds, converts, clones and drops nested values recursively, and it turns
//! every memo reference into a full copy of the referenced value. A crafted pickle of a few
//! kilobytes can therefore overflow the stack through deep nesting (the process aborts), or
//! exhaust memory through references that double the value at each level. [`check_pickle`]
//! runs first and rejects such input with an error.
//!
//! The scan replays serde-pickle's stack machine opcode by opcode, but it keeps only the
//! structure: a graph whose nodes are containers and whose edges lead to children or to memo
//! entries. Memo references are resolved to the final memo entries, as serde-pickle resolves
//! them after parsing. Where serde-pickle would stop with an error, the scan stops as well and
//! checks what was built up to that point, because dropping it also recurses.

use std::collections::HashMap;

/// Maximum nesting depth, counting containers and memo references.
///
/// The test packs measure 5 to 9 levels by this count, the deepest being the one with numpy
/// images. A debug build of the parser uses about 1 KiB of stack per nested list, and about
/// 2 KiB per list reached through a memo reference. On x86-64, 1,600 nested lists (or 1,000
/// linked through memo references) overflowed a 2 MiB thread stack. 256 levels therefore use a
/// small part of the 2 MiB stack that Rust gives a spawned thread.
pub(crate) const MAX_PICKLE_DEPTH: u32 = 256;

/// Maximum number of values after expanding memo references and copies.
///
/// The parser keeps every expanded value in memory at once. A pack with numpy images expands
/// to about 11 values per image, so the limit admits packs of more than a million images.
///
/// NOTE: the limit counts values, not payload bytes. A pickle that references one large byte
/// string many times through the memo still expands to that many full copies of it.
pub(crate) const MAX_PICKLE_VALUES: u64 = 1 << 24;

/// Rejects a pickle that nests deeper than [`MAX_PICKLE_DEPTH`], expands to more than
/// [`MAX_PICKLE_VALUES`] values, or reaches a value from itself through memo references.
///
/// Returns the reason on rejection. Input that serde-pickle rejects for other reasons passes,
/// so that its own error message reaches the user.
pub(crate) fn check_pickle(bytes: &[u8]) -> Result<(), String> {
    let mut machine = Machine::default();
    let mut reader = Reader { bytes, position: 0 };
    loop {
        match machine.step(&mut reader) {
            Ok(()) => {}
            Err(Halt::Stop) => break,
            Err(Halt::Reject(reason)) => return Err(reason),
        }
    }
    machine.check_structure()
}

/// A value on the stack, in a container or in the memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// A scalar, string or byte string.
    Leaf,
    /// A container, as an index into [`Machine::nodes`].
    Node(usize),
    /// A reference to a memo entry.
    Memo(u32),
}

/// The reason the scan stops reading opcodes.
enum Halt {
    /// The pickle ended, or serde-pickle would stop here with its own error.
    Stop,
    /// The pickle exceeds a limit; the reason is the error message.
    Reject(String),
}

type Step<T = ()> = Result<T, Halt>;

/// Turns a failed parser precondition into [`Halt::Stop`].
trait OrStop<T> {
    fn or_stop(self) -> Step<T>;
}

impl<T> OrStop<T> for Option<T> {
    fn or_stop(self) -> Step<T> {
        self.ok_or(Halt::Stop)
    }
}

/// The structure-only pickle machine.
#[derive(Default)]
struct Machine {
    /// Children of each container.
    nodes: Vec<Vec<Item>>,
    /// The current stack, above the topmost mark.
    stack: Vec<Item>,
    /// The stacks saved by each `MARK`, innermost last.
    marks: Vec<Vec<Item>>,
    memo: HashMap<u32, Item>,
    /// Children stored so far, which bounds the cost of copies.
    stored: u64,
}

impl Machine {
    /// Reads and applies one opcode.
    fn step(&mut self, reader: &mut Reader<'_>) -> Step {
        let opcode = reader.byte()?;
        match opcode {
            b'.' => Err(Halt::Stop),
            b'(' => {
                self.marks.push(std::mem::take(&mut self.stack));
                Ok(())
            }
            // POP removes the topmost mark when the stack above it is empty.
            b'0' if self.stack.is_empty() => self.pop_mark().map(drop),
            b'0' => self.pop_items(1).map(drop),
            b'1' => self.pop_mark().map(drop),
            b'2' => self.dup(),
            // PROTO and FRAME.
            b'\x80' => reader.skip(1),
            b'\x95' => reader.skip(8),
            // PUT, BINPUT, LONG_BINPUT, MEMOIZE.
            b'p' => self.put(reader.line_number()?),
            b'q' => self.put(u32::from(reader.byte()?)),
            b'r' => self.put(reader.u32()?),
            b'\x94' => self.put(self.memo.len() as u32),
            // GET, BINGET, LONG_BINGET.
            b'g' => self.get(reader.line_number()?),
            b'h' => self.get(u32::from(reader.byte()?)),
            b'j' => self.get(reader.u32()?),
            _ if skip_scalar(opcode, reader)? => {
                self.stack.push(Item::Leaf);
                Ok(())
            }
            _ => self.container_op(opcode, reader),
        }
    }

    /// Applies an opcode that builds or extends a container, or calls or builds an object.
    fn container_op(&mut self, opcode: u8, reader: &mut Reader<'_>) -> Step {
        match opcode {
            // EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, EMPTY_SET.
            b')' | b']' | b'}' | b'\x8f' => self.push_node(Vec::new()),
            // TUPLE1, TUPLE2, TUPLE3.
            b'\x85'..=b'\x87' => {
                let items = self.pop_items(usize::from(opcode - 0x84))?;
                self.push_node(items)
            }
            // TUPLE, LIST, DICT, FROZENSET: the items above the mark.
            b't' | b'l' | b'd' | b'\x91' => {
                let items = self.pop_mark()?;
                self.push_node(items)
            }
            // APPEND, SETITEM: one value, or a key and a value, into the container below.
            b'a' | b's' => {
                let items = self.pop_items(if opcode == b'a' { 1 } else { 2 })?;
                self.extend_top(items)
            }
            // APPENDS, SETITEMS, ADDITEMS: the items above the mark.
            b'e' | b'u' | b'\x90' => {
                let items = self.pop_mark()?;
                self.extend_top(items)
            }
            // GLOBAL: a module and a name, each on a line. STACK_GLOBAL: both from the stack.
            b'c' => {
                reader.line()?;
                reader.line()?;
                self.stack.push(Item::Leaf);
                Ok(())
            }
            b'\x93' => {
                self.pop_items(2)?;
                self.stack.push(Item::Leaf);
                Ok(())
            }
            _ => self.object_op(opcode, reader),
        }
    }

    /// Applies the opcodes that call or build objects, keeping what serde-pickle keeps with
    /// `keep_restore_state`.
    fn object_op(&mut self, opcode: u8, reader: &mut Reader<'_>) -> Step {
        match opcode {
            // REDUCE: the result contains copies of the argument tuple's items.
            b'R' => {
                let items = self.pop_items(2)?;
                let Item::Node(arguments) = self.resolve(items[1])? else {
                    return Err(Halt::Stop);
                };
                self.push_node(self.nodes[arguments].clone())
            }
            // INST: two lines of names, then the arguments above the mark.
            b'i' => {
                reader.line()?;
                reader.line()?;
                let items = self.pop_mark()?;
                self.push_node(items)
            }
            // OBJ: the arguments above the mark, and the class below them.
            b'o' => {
                let items = self.pop_mark()?;
                self.pop_items(1)?;
                self.push_node(items)
            }
            // NEWOBJ and BUILD keep the topmost item.
            b'\x81' | b'b' => {
                let items = self.pop_items(2)?;
                self.stack.push(items[1]);
                Ok(())
            }
            // NEWOBJ_EX keeps the arguments and keyword arguments above the class.
            b'\x92' => {
                let items = self.pop_items(3)?;
                self.push_node(items[1..].to_vec())
            }
            // Unsupported opcodes stop serde-pickle.
            _ => Err(Halt::Stop),
        }
    }

    /// Removes and returns the items above the topmost mark.
    fn pop_mark(&mut self) -> Step<Vec<Item>> {
        let below = self.marks.pop().or_stop()?;
        Ok(std::mem::replace(&mut self.stack, below))
    }

    /// Removes the `count` topmost items, bottom first.
    fn pop_items(&mut self, count: usize) -> Step<Vec<Item>> {
        let start = self.stack.len().checked_sub(count).or_stop()?;
        Ok(self.stack.split_off(start))
    }

    /// Stores a new container holding `items`.
    fn new_node(&mut self, items: Vec<Item>) -> Step<Item> {
        self.count_stored(items.len())?;
        self.nodes.push(items);
        Ok(Item::Node(self.nodes.len() - 1))
    }

    fn push_node(&mut self, items: Vec<Item>) -> Step {
        let node = self.new_node(items)?;
        self.stack.push(node);
        Ok(())
    }

    /// Adds `items` to the container on top of the stack, or to the memo entry it refers to.
    fn extend_top(&mut self, items: Vec<Item>) -> Step {
        let top = self.stack.last().copied().or_stop()?;
        let Item::Node(node) = self.resolve(top)? else { return Err(Halt::Stop) };
        self.count_stored(items.len())?;
        self.nodes[node].extend(items);
        Ok(())
    }

    /// Returns a copy of `item`, resolving a memo reference, as serde-pickle clones values.
    fn copy(&mut self, item: Item) -> Step<Item> {
        match self.resolve(item)? {
            Item::Node(node) => self.new_node(self.nodes[node].clone()),
            other => Ok(other),
        }
    }

    /// Pushes a copy of the top item.
    fn dup(&mut self) -> Step {
        let top = self.stack.last().copied().or_stop()?;
        let copy = self.copy(top)?;
        self.stack.push(copy);
        Ok(())
    }

    /// Moves the top item into memo entry `id` and pushes a reference to it. A top item that
    /// is itself a memo reference is stored as a copy.
    fn put(&mut self, id: u32) -> Step {
        let top = self.pop_items(1)?[0];
        let value = if matches!(top, Item::Memo(_)) { self.copy(top)? } else { top };
        self.memo.insert(id, value);
        self.stack.push(Item::Memo(id));
        Ok(())
    }

    fn get(&mut self, id: u32) -> Step {
        if !self.memo.contains_key(&id) {
            return Err(Halt::Stop);
        }
        self.stack.push(Item::Memo(id));
        Ok(())
    }

    /// Follows a memo reference to its current entry.
    fn resolve(&self, item: Item) -> Step<Item> {
        match item {
            Item::Memo(id) => self.memo.get(&id).copied().or_stop(),
            other => Ok(other),
        }
    }

    fn count_stored(&mut self, items: usize) -> Step {
        self.stored += items as u64;
        if self.stored > MAX_PICKLE_VALUES {
            return Err(Halt::Reject(too_many_values()));
        }
        Ok(())
    }

    /// Checks the depth and expanded size of every container, following memo references to
    /// their final entries.
    fn check_structure(&self) -> Result<(), String> {
        let mut measures: Vec<Option<Measure>> = vec![None; self.nodes.len()];
        let mut on_path = vec![false; self.nodes.len()];
        for root in 0..self.nodes.len() {
            if measures[root].is_none() {
                self.measure_from(root, &mut measures, &mut on_path)?;
            }
        }
        Ok(())
    }

    /// Returns the container that `item` leads to, if any.
    fn target(&self, item: Item) -> Option<usize> {
        match self.resolve(item) {
            Ok(Item::Node(node)) => Some(node),
            _ => None,
        }
    }

    /// Measures `root` and every container below it. The walk keeps its path in a vector,
    /// so that deep input cannot overflow this function's stack either.
    fn measure_from(
        &self,
        root: usize,
        measures: &mut [Option<Measure>],
        on_path: &mut [bool],
    ) -> Result<(), String> {
        // Each frame is a container and the index of its next child to visit.
        let mut path = vec![(root, 0)];
        on_path[root] = true;
        while let Some(frame) = path.last_mut() {
            let node = frame.0;
            let Some(&child) = self.nodes[node].get(frame.1) else {
                measures[node] = Some(self.combine(node, measures)?);
                on_path[node] = false;
                path.pop();
                continue;
            };
            frame.1 += 1;
            let Some(target) = self.target(child) else { continue };
            if on_path[target] {
                return Err(cycle());
            }
            if measures[target].is_none() {
                on_path[target] = true;
                path.push((target, 0));
            }
        }
        Ok(())
    }

    /// Computes the measure of `node` from the measures of its children.
    fn combine(&self, node: usize, measures: &[Option<Measure>]) -> Result<Measure, String> {
        let mut depth = 0;
        let mut values: u64 = 1;
        for &child in &self.nodes[node] {
            let mut child_measure = match self.target(child) {
                Some(target) => measures[target].expect("children are measured first"),
                None => Measure { depth: 1, values: 1 },
            };
            // Resolving a memo reference costs the parser one more level of recursion.
            if matches!(child, Item::Memo(_)) {
                child_measure.depth += 1;
            }
            depth = depth.max(child_measure.depth);
            values = values.saturating_add(child_measure.values);
        }

        let measure = Measure { depth: depth + 1, values };
        if measure.depth > MAX_PICKLE_DEPTH {
            return Err(format!(
                "the pickle nests values more than {MAX_PICKLE_DEPTH} levels deep, which the \
                 parser cannot read safely (validation packs nest about 10 levels; rebuild the \
                 pack as a tuple of an image list and a flag list)"
            ));
        }
        if measure.values > MAX_PICKLE_VALUES {
            return Err(too_many_values());
        }
        Ok(measure)
    }
}

/// Nesting depth and expanded value count of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Measure {
    depth: u32,
    values: u64,
}

fn too_many_values() -> String {
    format!(
        "the pickle expands to more than {MAX_PICKLE_VALUES} values through memo references or \
         copies, more than the parser can hold (rebuild the pack, or split it into smaller packs)"
    )
}

fn cycle() -> String {
    "the pickle contains a value that contains itself through memo references, which a \
     validation pack never does (rebuild the pack)"
        .to_string()
}

/// Skips the argument of an opcode that pushes a scalar or a string, returning whether
/// `opcode` is such an opcode.
fn skip_scalar(opcode: u8, reader: &mut Reader<'_>) -> Step<bool> {
    match opcode {
        // NONE, NEWTRUE, NEWFALSE.
        b'N' | b'\x88' | b'\x89' => {}
        // INT, LONG, FLOAT, STRING, UNICODE: a line of text.
        b'I' | b'L' | b'F' | b'S' | b'V' => {
            reader.line()?;
        }
        // BININT1, BININT2, BININT, BINFLOAT.
        b'K' => reader.skip(1)?,
        b'M' => reader.skip(2)?,
        b'J' => reader.skip(4)?,
        b'G' => reader.skip(8)?,
        // Payloads after a length of 1, 4 or 8 bytes.
        b'C' | b'U' | b'\x8c' | b'\x8a' => reader.skip_counted(1)?,
        b'B' | b'T' | b'X' | b'\x8b' => reader.skip_counted(4)?,
        b'\x8e' | b'\x8d' | b'\x96' => reader.skip_counted(8)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// A cursor over the pickle bytes; every method stops the scan at the end of the input.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Step<&'a [u8]> {
        let end = self.position.checked_add(count).filter(|&end| end <= self.bytes.len());
        let end = end.or_stop()?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn skip(&mut self, count: usize) -> Step {
        self.take(count).map(drop)
    }

    fn u32(&mut self) -> Step<u32> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("take returns 4 bytes")))
    }

    /// Skips a payload that follows its little-endian length of `width` bytes.
    fn skip_counted(&mut self, width: usize) -> Step {
        let mut length = [0u8; 8];
        length[..width].copy_from_slice(self.take(width)?);
        let length = usize::try_from(u64::from_le_bytes(length)).ok().or_stop()?;
        self.skip(length)
    }

    /// Reads up to the next newline, which ends a text argument.
    fn line(&mut self) -> Step<&'a [u8]> {
        let rest = &self.bytes[self.position..];
        let length = rest.iter().position(|&byte| byte == b'\n').or_stop()?;
        self.position += length + 1;
        Ok(&rest[..length])
    }

    /// Reads a decimal memo id on its own line.
    fn line_number(&mut self) -> Step<u32> {
        let line = self.line()?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).ok().or_stop()?;
        text.parse().ok().or_stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nests `depth` empty lists in one another, as Python's pickler writes them.
    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x80, 2];
        bytes.extend(std::iter::repeat_n(b']', depth));
        bytes.extend(std::iter::repeat_n(b'a', depth - 1));
        bytes.push(b'.');
        bytes
    }

    #[test]
    fn depth_limit_is_exact_for_lists() {
        assert_eq!(check_pickle(&nested_lists(MAX_PICKLE_DEPTH as usize)), Ok(()));
        let error = check_pickle(&nested_lists(MAX_PICKLE_DEPTH as usize + 1)).unwrap_err();
        assert!(error.contains("more than 256 levels"), "{error}");
    }

    #[test]
    fn nested_one_tuples_are_rejected() {
        let mut bytes = vec![0x80, 2, b'N'];
        bytes.extend(std::iter::repeat_n(0x85, 20_000));
        bytes.push(b'.');
        assert!(check_pickle(&bytes).unwrap_err().contains("levels deep"));
    }

    #[test]
    fn nesting_through_marks_is_rejected() {
        let mut bytes = vec![0x80, 2];
        bytes.extend(std::iter::repeat_n(b'(', 5_000));
        bytes.extend(std::iter::repeat_n(b'l', 5_000));
        bytes.push(b'.');
        assert!(check_pickle(&bytes).unwrap_err().contains("levels deep"));
    }

    #[test]
    fn unterminated_nesting_is_rejected() {
        // No STOP: serde-pickle fails at the end but still drops the nested lists.
        let mut bytes = nested_lists(5_000);
        bytes.pop();
        assert!(check_pickle(&bytes).unwrap_err().contains("levels deep"));
    }

    #[test]
    fn memo_chain_counts_each_reference() {
        // x0 = []; x_i = [x_(i-1)] for i < 200, each stored in the memo and referenced once.
        let mut bytes = vec![0x80, 4, b']', 0x94];
        for id in 0..199u32 {
            bytes.extend([b'0', b']', b'j']);
            bytes.extend(id.to_le_bytes());
            bytes.extend([b'a', 0x94]);
        }
        bytes.push(b'.');
        // 200 lists and 199 references are 399 levels.
        assert!(check_pickle(&bytes).unwrap_err().contains("levels deep"));
    }

    #[test]
    fn doubling_references_are_rejected() {
        // x0 = (); x_i = (x_(i-1), x_(i-1)): 2^40 values after expansion.
        let mut bytes = vec![0x80, 4, b')', 0x94];
        for id in 0..40u32 {
            bytes.extend([b'0', b'j']);
            bytes.extend(id.to_le_bytes());
            bytes.push(b'j');
            bytes.extend(id.to_le_bytes());
            bytes.extend([0x86, 0x94]);
        }
        bytes.push(b'.');
        assert!(check_pickle(&bytes).unwrap_err().contains("expands to more than"));
    }

    #[test]
    fn self_reference_is_rejected() {
        // x = []; x.append(x)
        let bytes = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.'];
        assert!(check_pickle(&bytes).unwrap_err().contains("contains itself"));
    }

    #[test]
    fn shared_references_within_limits_pass() {
        // x = b"ab"; ([x, x, x], [True]), with x stored once and referenced twice.
        let mut bytes = vec![0x80, 2, b']', b'C', 2, b'a', b'b', b'q', 0, b'a'];
        bytes.extend([b'h', 0, b'a', b'h', 0, b'a', b']', 0x88, b'a', 0x86, b'.']);
        assert_eq!(check_pickle(&bytes), Ok(()));
    }

    #[test]
    fn garbage_and_truncation_pass_to_the_parser() {
        assert_eq!(check_pickle(b""), Ok(()));
        assert_eq!(check_pickle(b"not a pickle"), Ok(()));
        assert_eq!(check_pickle(&[0x80, 2, b'B', 0xff, 0xff]), Ok(()));
        assert_eq!(check_pickle(b"aet1R"), Ok(()));
    }
}
