#!/usr/bin/env python3
"""Regenerate ``profiles/data/sample/{train,val,test}.jsonl`` byte-identically.

The sample dataset is what the ``smoke`` preset trains on: a few hundred assembly Q&A pairs
(x86-64 and arm64) in the instruction format (``instruction`` / ``input`` / ``output``), with
deliberately varied lengths (one-line answers up to ~60-line listings) so that packing and
length handling are exercised. The facts are hand-written tables below; the script only
combines them, shuffles with a fixed seed and splits 80/10/10. Run it from anywhere::

    python scripts/make_sample_data.py [--out profiles/data/sample]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20240611
ROOT = Path(__file__).resolve().parent.parent

# (mnemonic, arch, one-line meaning, longer note, example)
INSTRUCTIONS: list[tuple[str, str, str, str, str]] = [
    ("mov", "x86-64", "copies the source operand into the destination operand",
     "It does not change any flags. A 32-bit destination such as eax zero-extends into the full 64-bit register.",
     "mov rax, rbx        ; rax = rbx\nmov eax, 1          ; rax = 1 (upper 32 bits cleared)"),
    ("lea", "x86-64", "computes an effective address and stores the address, not the memory contents",
     "Compilers use it as a cheap three-operand add or multiply by 3, 5 or 9 because it does not touch the flags.",
     "lea rax, [rdi + rsi*4 + 8]   ; rax = rdi + 4*rsi + 8\nlea rax, [rdi + rdi*2]       ; rax = 3*rdi"),
    ("add", "x86-64", "adds the source to the destination and sets CF, OF, SF, ZF, AF and PF",
     "The carry flag reports unsigned overflow and the overflow flag reports signed overflow.",
     "add rax, rcx\nadd qword [rsp+8], 1"),
    ("sub", "x86-64", "subtracts the source from the destination and sets the flags like cmp",
     "sub rsp, N is the usual way to reserve N bytes of stack space in a prologue.",
     "sub rsp, 32\nsub eax, edx"),
    ("imul", "x86-64", "performs a signed multiply",
     "The two- and three-operand forms keep only the low half of the product; the one-operand form writes rdx:rax.",
     "imul rax, rcx          ; rax *= rcx\nimul rax, rdi, 10      ; rax = rdi * 10"),
    ("idiv", "x86-64", "divides rdx:rax by the operand, leaving the quotient in rax and the remainder in rdx",
     "Sign-extend rax into rdx with cqo first, otherwise the dividend is garbage; dividing by zero raises #DE.",
     "mov rax, rdi\ncqo\nidiv rsi        ; rax = rdi / rsi, rdx = rdi % rsi"),
    ("xor", "x86-64", "computes a bitwise exclusive or",
     "xor eax, eax is the idiomatic way to zero a register: it is short and breaks dependency chains.",
     "xor eax, eax    ; rax = 0\nxor rdi, rsi"),
    ("shl", "x86-64", "shifts the destination left, filling with zeros",
     "The shift count is an immediate or cl; it is masked to 6 bits for 64-bit operands.",
     "shl rax, 3      ; rax *= 8\nshl rdx, cl"),
    ("sar", "x86-64", "shifts right arithmetically, copying the sign bit into the vacated positions",
     "It rounds toward negative infinity, so sar is not the same as signed division for negative numbers.",
     "sar rax, 1\nsar edi, 31     ; edi = 0 or -1 depending on the sign"),
    ("cmp", "x86-64", "subtracts the source from the destination only to set the flags, discarding the result",
     "Follow it with a conditional jump, setcc or cmovcc; use jl/jg for signed and jb/ja for unsigned comparisons.",
     "cmp rdi, rsi\njl .Lless"),
    ("test", "x86-64", "computes a bitwise and only to set the flags",
     "test rax, rax followed by jz is the usual check for zero or a null pointer.",
     "test rdi, rdi\njz .Lnull"),
    ("cmovl", "x86-64", "moves the source into the destination only if the last comparison was signed less-than",
     "Conditional moves avoid branch mispredictions when the condition is unpredictable, at the cost of a data dependency.",
     "cmp rdi, rsi\nmov rax, rsi\ncmovl rax, rdi   ; rax = min(rdi, rsi)"),
    ("setne", "x86-64", "sets an 8-bit register to 1 if ZF is clear and to 0 otherwise",
     "Zero the full register before the comparison (or movzx after) because setcc writes only the low byte.",
     "xor eax, eax\ncmp rdi, rsi\nsetne al"),
    ("movzx", "x86-64", "copies a smaller operand into a larger register, zero-extending it",
     "Use it to load bytes from strings without leaving stale upper bits in the register.",
     "movzx eax, byte [rdi]\nmovzx ecx, word [rsi+2]"),
    ("movsx", "x86-64", "copies a smaller operand into a larger register, sign-extending it",
     "movsxd sign-extends a 32-bit value to 64 bits, which is what an int index into an array needs.",
     "movsx rax, byte [rdi]\nmovsxd rcx, esi"),
    ("push", "x86-64", "decrements rsp by 8 and stores the operand at the new top of the stack",
     "The System V ABI requires rsp to be 16-byte aligned at every call instruction, so count your pushes.",
     "push rbp\npush rbx"),
    ("pop", "x86-64", "loads the value at the top of the stack into the operand and increments rsp by 8",
     "Pop callee-saved registers in the reverse order they were pushed.",
     "pop rbx\npop rbp"),
    ("call", "x86-64", "pushes the return address and jumps to the target",
     "After the call, rax holds the integer return value; caller-saved registers may have been clobbered.",
     "call strlen\ncall qword [rip + fnptr]"),
    ("ret", "x86-64", "pops the return address from the stack and jumps to it",
     "Everything pushed by the function must be popped before ret, otherwise it returns to a garbage address.",
     "ret"),
    ("syscall", "x86-64", "enters the kernel with the system call number in rax",
     "Arguments go in rdi, rsi, rdx, r10, r8, r9; the instruction clobbers rcx and r11.",
     "mov eax, 60     ; exit\nxor edi, edi\nsyscall"),
    ("popcnt", "x86-64", "counts the set bits of the source operand",
     "It needs the POPCNT CPU feature; compilers emit it with -mpopcnt or -march=native.",
     "popcnt rax, rdi"),
    ("bsf", "x86-64", "finds the index of the lowest set bit",
     "The destination is undefined when the source is zero; tzcnt defines that case as the operand width.",
     "bsf rax, rdi\ntzcnt rax, rdi"),
    ("rep movsb", "x86-64", "copies rcx bytes from [rsi] to [rdi]",
     "On CPUs with ERMSB it is a fast memcpy for medium and large sizes; the direction flag must be clear.",
     "mov rcx, rdx\nrep movsb"),
    ("ldr", "arm64", "loads a register from memory",
     "The address can use an immediate offset, a register offset, or pre/post-index writeback.",
     "ldr x0, [x1]          // x0 = *x1\nldr w2, [x1, #4]      // 32-bit load\nldr x3, [x1], #8      // post-increment"),
    ("str", "arm64", "stores a register to memory",
     "Like ldr it supports pre-index ([x, #n]!) and post-index ([x], #n) addressing.",
     "str x0, [sp, #16]\nstr w1, [x2], #4"),
    ("ldp", "arm64", "loads a pair of registers from consecutive memory locations",
     "Epilogues use ldp x29, x30, [sp], #16 to restore the frame pointer and link register in one instruction.",
     "ldp x29, x30, [sp], #16\nldp x0, x1, [x2]"),
    ("stp", "arm64", "stores a pair of registers to consecutive memory locations",
     "Prologues use stp x29, x30, [sp, #-16]! to save the frame pointer and link register and allocate 16 bytes.",
     "stp x29, x30, [sp, #-16]!\nmov x29, sp"),
    ("add", "arm64", "adds two registers, or a register and an immediate, into a destination register",
     "It does not set flags; adds does. The second operand can be shifted or extended.",
     "add x0, x1, x2\nadd x0, x0, x1, lsl #3   // x0 += x1 * 8"),
    ("madd", "arm64", "multiplies two registers and adds a third: d = n * m + a",
     "mul is an alias of madd with the zero register as the addend.",
     "madd x0, x1, x2, x3    // x0 = x1 * x2 + x3\nmul x0, x1, x2"),
    ("sdiv", "arm64", "divides two signed registers, rounding toward zero",
     "Division by zero returns 0 instead of trapping; there is no remainder output, use msub to compute it.",
     "sdiv x2, x0, x1\nmsub x3, x2, x1, x0    // x3 = x0 % x1"),
    ("cmp", "arm64", "compares two operands by subtracting them and setting NZCV",
     "It is an alias of subs with the zero register as destination; b.lt/b.gt are signed, b.lo/b.hi unsigned.",
     "cmp x0, x1\nb.lt 1f"),
    ("cbz", "arm64", "branches if a register is zero, without touching the flags",
     "cbnz is the opposite; both have a range of plus or minus 1 MiB.",
     "cbz x0, .Ldone\ncbnz w1, .Lloop"),
    ("tbz", "arm64", "tests a single bit and branches if it is zero",
     "Useful for checking a sign bit (bit 63) or a flag bit without a separate and/cmp.",
     "tbz x0, #63, .Lpositive\ntbnz w1, #0, .Lodd"),
    ("bl", "arm64", "branches to a subroutine and stores the return address in x30 (the link register)",
     "A non-leaf function must save x30 before calling anything, or it cannot return.",
     "bl printf\nblr x8"),
    ("ret", "arm64", "returns by branching to the address in x30",
     "Restore x30 from the stack first if the function called anything.",
     "ret"),
    ("adrp", "arm64", "forms the 4 KiB page address of a symbol relative to the program counter",
     "Pair it with add or ldr using :lo12: to reach the exact address of a global.",
     "adrp x0, msg\nadd x0, x0, :lo12:msg"),
    ("csel", "arm64", "selects one of two registers depending on a condition",
     "csinc, csinv and csneg are variants; cset is an alias that produces 0 or 1.",
     "cmp x0, x1\ncsel x0, x0, x1, lt    // x0 = min(x0, x1)"),
    ("movk", "arm64", "inserts a 16-bit immediate into a register at a given shift, keeping the other bits",
     "Build a 64-bit constant with movz for the first chunk and movk for the rest.",
     "movz x0, #0x1234, lsl #48\nmovk x0, #0x5678, lsl #32\nmovk x0, #0x9abc"),
    ("ubfx", "arm64", "extracts an unsigned bit field from a register",
     "ubfx x0, x1, #lsb, #width is equivalent to (x1 >> lsb) & ((1 << width) - 1).",
     "ubfx x0, x1, #8, #4     // x0 = (x1 >> 8) & 0xf"),
    ("svc", "arm64", "makes a supervisor call (system call)",
     "On Linux the system call number goes in x8 and arguments in x0-x5; the result comes back in x0.",
     "mov x8, #93     // exit\nmov x0, #0\nsvc #0"),
]

# (task, C code, x86-64 listing, arm64 listing)
FUNCTIONS: list[tuple[str, str, str, str]] = [
    ("return the larger of two signed 64-bit integers",
     "long max2(long a, long b) { return a > b ? a : b; }",
     "max2:\n    mov rax, rdi\n    cmp rdi, rsi\n    cmovl rax, rsi\n    ret",
     "max2:\n    cmp x0, x1\n    csel x0, x0, x1, gt\n    ret"),
    ("compute the absolute value of a signed 64-bit integer",
     "long abs64(long x) { return x < 0 ? -x : x; }",
     "abs64:\n    mov rax, rdi\n    neg rax\n    cmovl rax, rdi\n    ret",
     "abs64:\n    cmp x0, #0\n    cneg x0, x0, lt\n    ret"),
    ("sum an array of n 64-bit integers",
     "long sum(const long *a, size_t n) {\n    long s = 0;\n    for (size_t i = 0; i < n; i++) s += a[i];\n    return s;\n}",
     "sum:\n    xor eax, eax\n    test rsi, rsi\n    jz .Ldone\n.Lloop:\n    add rax, [rdi]\n    add rdi, 8\n"
     "    dec rsi\n    jnz .Lloop\n.Ldone:\n    ret",
     "sum:\n    mov x2, #0\n    cbz x1, 2f\n1:\n    ldr x3, [x0], #8\n    add x2, x2, x3\n    subs x1, x1, #1\n"
     "    b.ne 1b\n2:\n    mov x0, x2\n    ret"),
    ("compute the length of a NUL-terminated string",
     "size_t my_strlen(const char *s) {\n    const char *p = s;\n    while (*p) p++;\n    return p - s;\n}",
     "my_strlen:\n    mov rax, rdi\n.Lloop:\n    cmp byte [rax], 0\n    je .Ldone\n    inc rax\n    jmp .Lloop\n"
     ".Ldone:\n    sub rax, rdi\n    ret",
     "my_strlen:\n    mov x1, x0\n1:\n    ldrb w2, [x1], #1\n    cbnz w2, 1b\n    sub x0, x1, x0\n"
     "    sub x0, x0, #1\n    ret"),
    ("compute n factorial iteratively (n < 21)",
     "unsigned long fact(unsigned long n) {\n    unsigned long r = 1;\n    while (n > 1) r *= n--;\n    return r;\n}",
     "fact:\n    mov eax, 1\n.Lloop:\n    cmp rdi, 1\n    jbe .Ldone\n    imul rax, rdi\n    dec rdi\n"
     "    jmp .Lloop\n.Ldone:\n    ret",
     "fact:\n    mov x1, #1\n1:\n    cmp x0, #1\n    b.ls 2f\n    mul x1, x1, x0\n    sub x0, x0, #1\n"
     "    b 1b\n2:\n    mov x0, x1\n    ret"),
    ("fill n bytes of memory with a byte value",
     "void *my_memset(void *d, int c, size_t n) {\n    unsigned char *p = d;\n    while (n--) *p++ = (unsigned char)c;\n"
     "    return d;\n}",
     "my_memset:\n    mov r8, rdi\n    mov eax, esi\n    mov rcx, rdx\n    rep stosb\n    mov rax, r8\n    ret",
     "my_memset:\n    mov x3, x0\n    cbz x2, 2f\n1:\n    strb w1, [x3], #1\n    subs x2, x2, #1\n    b.ne 1b\n"
     "2:\n    ret"),
    ("count the set bits of a 64-bit value without popcnt",
     "int bits(unsigned long x) {\n    int c = 0;\n    while (x) { x &= x - 1; c++; }\n    return c;\n}",
     "bits:\n    xor eax, eax\n.Lloop:\n    test rdi, rdi\n    jz .Ldone\n    lea rdx, [rdi - 1]\n"
     "    and rdi, rdx\n    inc eax\n    jmp .Lloop\n.Ldone:\n    ret",
     "bits:\n    mov w1, #0\n1:\n    cbz x0, 2f\n    sub x2, x0, #1\n    and x0, x0, x2\n    add w1, w1, #1\n"
     "    b 1b\n2:\n    mov w0, w1\n    ret"),
    ("swap two 64-bit values through pointers",
     "void swap(long *a, long *b) { long t = *a; *a = *b; *b = t; }",
     "swap:\n    mov rax, [rdi]\n    mov rdx, [rsi]\n    mov [rdi], rdx\n    mov [rsi], rax\n    ret",
     "swap:\n    ldr x2, [x0]\n    ldr x3, [x1]\n    str x3, [x0]\n    str x2, [x1]\n    ret"),
    ("compute the n-th Fibonacci number iteratively",
     "unsigned long fib(unsigned n) {\n    unsigned long a = 0, b = 1;\n    while (n--) { unsigned long t = a + b; a = b; b = t; }\n"
     "    return a;\n}",
     "fib:\n    xor eax, eax\n    mov edx, 1\n.Lloop:\n    test edi, edi\n    jz .Ldone\n    lea rcx, [rax + rdx]\n"
     "    mov rax, rdx\n    mov rdx, rcx\n    dec edi\n    jmp .Lloop\n.Ldone:\n    ret",
     "fib:\n    mov x1, #0\n    mov x2, #1\n1:\n    cbz w0, 2f\n    add x3, x1, x2\n    mov x1, x2\n    mov x2, x3\n"
     "    sub w0, w0, #1\n    b 1b\n2:\n    mov x0, x1\n    ret"),
    ("clamp a signed value into the range [lo, hi]",
     "long clamp(long x, long lo, long hi) { return x < lo ? lo : x > hi ? hi : x; }",
     "clamp:\n    mov rax, rdi\n    cmp rax, rsi\n    cmovl rax, rsi\n    cmp rax, rdx\n    cmovg rax, rdx\n    ret",
     "clamp:\n    cmp x0, x1\n    csel x0, x1, x0, lt\n    cmp x0, x2\n    csel x0, x2, x0, gt\n    ret"),
    ("return 1 if an unsigned value is a power of two and 0 otherwise",
     "int is_pow2(unsigned long x) { return x && !(x & (x - 1)); }",
     "is_pow2:\n    xor eax, eax\n    test rdi, rdi\n    jz .Ldone\n    lea rdx, [rdi - 1]\n    test rdi, rdx\n"
     "    sete al\n.Ldone:\n    ret",
     "is_pow2:\n    sub x1, x0, #1\n    tst x0, x1\n    ccmp x0, #0, #4, eq\n    cset w0, ne\n    ret"),
    ("find the index of the first zero in an array of 32-bit ints, or -1",
     "long find_zero(const int *a, long n) {\n    for (long i = 0; i < n; i++) if (a[i] == 0) return i;\n"
     "    return -1;\n}",
     "find_zero:\n    xor eax, eax\n.Lloop:\n    cmp rax, rsi\n    jge .Lnone\n    cmp dword [rdi + rax*4], 0\n"
     "    je .Ldone\n    inc rax\n    jmp .Lloop\n.Lnone:\n    mov rax, -1\n.Ldone:\n    ret",
     "find_zero:\n    mov x2, #0\n1:\n    cmp x2, x1\n    b.ge 3f\n    ldr w3, [x0, x2, lsl #2]\n    cbz w3, 2f\n"
     "    add x2, x2, #1\n    b 1b\n2:\n    mov x0, x2\n    ret\n3:\n    mov x0, #-1\n    ret"),
]

CONVENTIONS: list[tuple[str, str]] = [
    ("Which registers carry the first six integer arguments in the System V AMD64 ABI?",
     "rdi, rsi, rdx, rcx, r8 and r9, in that order. Further arguments go on the stack, and the return value "
     "comes back in rax (rdx:rax for 128-bit values)."),
    ("Which registers are callee-saved on x86-64 Linux?",
     "rbx, rbp, r12, r13, r14 and r15 (and rsp). A function that uses them must restore them before returning; "
     "every other general-purpose register may be clobbered by a call."),
    ("Which registers carry arguments on arm64 (AAPCS64)?",
     "x0 to x7 carry the first eight integer or pointer arguments and v0 to v7 the floating-point ones. "
     "The result comes back in x0 (or v0), and x8 holds the address for an indirectly returned struct."),
    ("Which registers are callee-saved on arm64?",
     "x19 to x28, the frame pointer x29 and the link register x30 when the function makes calls, plus the low "
     "64 bits of v8 to v15. x9 to x15 are temporaries the callee may clobber."),
    ("What stack alignment does the System V x86-64 ABI require?",
     "rsp must be a multiple of 16 immediately before a call instruction, so on entry to a function rsp+8 is "
     "16-byte aligned. Misalignment crashes code that uses movaps on stack slots, for example inside printf."),
    ("What stack alignment does arm64 require?",
     "sp must always be 16-byte aligned when it is used to access memory; the hardware can check this and "
     "fault. That is why prologues allocate stack in multiples of 16."),
    ("What is the red zone on x86-64 Linux?",
     "The 128 bytes below rsp that signal handlers will not clobber. Leaf functions may use it for locals "
     "without adjusting rsp. Kernel code is compiled with -mno-red-zone because interrupts use the same stack."),
    ("Why does writing to eax clear the upper half of rax?",
     "The architects made 32-bit writes zero-extend so that the CPU does not have to merge the old upper bits, "
     "which would create a false dependency. Writes to 8- and 16-bit registers do not zero-extend."),
    ("What is the difference between the frame pointer and the stack pointer?",
     "The stack pointer (rsp, sp) moves whenever the function pushes or allocates. The frame pointer (rbp, x29) "
     "is fixed for the whole function and points at the saved previous frame pointer, so debuggers and "
     "profilers can walk the chain of frames."),
    ("How do you return a 128-bit integer on x86-64 and arm64?",
     "On x86-64 the low 64 bits go in rax and the high 64 bits in rdx. On arm64 they go in x0 (low) and x1 (high)."),
]

DEBUG_SNIPPETS: list[tuple[str, str, str, str]] = [
    ("x86-64", "push rbx\nmov rbx, rdi\ncall helper\nmov rax, rbx\nret",
     "The function pushes rbx but never pops it, so ret jumps to the saved rbx value instead of the return address.",
     "Add pop rbx before ret."),
    ("x86-64", "sub rsp, 8\ncall printf\nadd rsp, 8\nret",
     "printf is variadic, so al must hold the number of vector registers used for arguments; it is left undefined here.",
     "Add xor eax, eax before call printf."),
    ("arm64", "my_func:\n    bl helper\n    add x0, x0, #1\n    ret",
     "bl overwrites x30, so ret returns to the instruction after bl helper in an endless loop.",
     "Save x29 and x30 with stp x29, x30, [sp, #-16]! on entry and restore them with ldp x29, x30, [sp], #16 before ret."),
    ("x86-64", "mov rax, rdi\nidiv rsi\nret",
     "idiv divides rdx:rax, but rdx was never set, so the dividend contains whatever was in rdx and the division "
     "can overflow and raise #DE.",
     "Insert cqo after mov rax, rdi to sign-extend rax into rdx."),
    ("arm64", "ldr x0, [sp, #8]\nsub sp, sp, #8\nret",
     "sub sp, sp, #8 leaves sp misaligned, and the next memory access through sp faults with an alignment error.",
     "Always adjust sp in multiples of 16."),
    ("x86-64", "mov ecx, [rdi]\ncmp ecx, esi\nja .Lbigger",
     "ja is an unsigned comparison, so a negative int in ecx compares as a huge number and takes the branch.",
     "Use jg for signed integers."),
    ("x86-64", "movzx eax, byte [rdi]\ncmp al, 0\njne .Lloop\nmov rax, rdi\nret",
     "The loop never advances rdi, so it either exits immediately or spins forever on the first byte.",
     "Add inc rdi inside the loop before jumping back."),
    ("arm64", "mov w0, #70000\nret",
     "A mov immediate must fit a 16-bit chunk at a shift (or a bitmask pattern); 70000 does not, so the assembler "
     "rejects it.",
     "Use movz w0, #0x1170 followed by movk w0, #0x1, lsl #16, or ldr w0, =70000."),
]

INSTRUCTION_ASKS = [
    "What does the {arch} instruction {m} do?",
    "Explain the {m} instruction on {arch}.",
    "How is {m} used in {arch} assembly?",
    "Give a short description of {m} ({arch}) with an example.",
]
FUNCTION_ASKS = [
    "Write an {arch} assembly function to {task}.",
    "Implement a function in {arch} assembly that will {task}.",
    "Show {arch} assembly that {task_s}.",
]
TRANSLATE_ASKS = [
    "Translate this C function to {arch} assembly.",
    "Compile the following C by hand into {arch} assembly.",
]
EXPLAIN_ASKS = [
    "What does this {arch} function compute?",
    "Explain what the following {arch} assembly does.",
]
DEBUG_ASKS = [
    "Find the bug in this {arch} code.",
    "This {arch} snippet crashes or misbehaves. Why?",
]
CONTEXT = "Context: the user is reading compiler output for Linux.\n"


def _third_person(task: str) -> str:
    first, _, rest = task.partition(" ")
    verb = first + ("es" if first.endswith(("sh", "ch", "x")) else "s")
    return f"{verb} {rest}"


def _records(rng: random.Random) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for m, arch, meaning, note, example in INSTRUCTIONS:
        for ask in rng.sample(INSTRUCTION_ASKS, 3):
            depth = rng.randrange(3)
            text = f"{m} {meaning}."
            if depth >= 1:
                text += f" {note}"
            if depth >= 2:
                text += f"\n\nExample:\n{example}"
            out.append({"instruction": ask.format(arch=arch, m=m), "input": "", "output": text})
    for task, c_code, x86, arm in FUNCTIONS:
        for arch, listing in (("x86-64", x86), ("arm64", arm)):
            for ask in rng.sample(FUNCTION_ASKS, 2):
                note = " Arguments arrive in rdi and rsi; the result goes in rax." if arch == "x86-64" else \
                    " Arguments arrive in x0 and x1; the result goes in x0."
                out.append({"instruction": ask.format(arch=arch, task=task, task_s=_third_person(task)),
                            "input": "", "output": f"{listing}\n\n{note.strip()}"})
            out.append({"instruction": rng.choice(TRANSLATE_ASKS).format(arch=arch), "input": c_code,
                        "output": listing})
            rec = {"instruction": rng.choice(EXPLAIN_ASKS).format(arch=arch), "input": listing,
                   "output": f"It is equivalent to this C:\n{c_code}\n\nIn words: it will {task}."}
            if rng.random() < 0.3:
                rec["context"] = CONTEXT
            out.append(rec)
    for q, a in CONVENTIONS:
        out.append({"instruction": q, "input": "", "output": a})
        out.append({"instruction": "Briefly: " + q[0].lower() + q[1:], "input": "", "output": a.split(". ")[0] + "."})
    for arch, code, why, fix in DEBUG_SNIPPETS:
        for ask in DEBUG_ASKS:
            out.append({"instruction": ask.format(arch=arch), "input": code, "output": f"{why}\n\nFix: {fix}"})
    # a few long answers: two listings side by side
    for task, c_code, x86, arm in FUNCTIONS:
        out.append({"instruction": f"Compare x86-64 and arm64 implementations of a function to {task}.",
                    "input": c_code,
                    "output": f"x86-64:\n{x86}\n\narm64:\n{arm}\n\nThe arm64 version has fixed-width "
                              "instructions and separate load/store; x86-64 can fold memory operands into "
                              "arithmetic and has variable-length encodings."})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "profiles" / "data" / "sample")
    args = ap.parse_args()
    rng = random.Random(SEED)
    recs = _records(rng)
    rng.shuffle(recs)
    n = len(recs)
    n_val = n_test = max(1, n // 10)
    splits = {"val": recs[:n_val], "test": recs[n_val:n_val + n_test], "train": recs[n_val + n_test:]}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        (args.out / f"{name}.jsonl").write_text(body, encoding="utf-8")
        print(f"{args.out / (name + '.jsonl')}: {len(rows)} records")


if __name__ == "__main__":
    main()
