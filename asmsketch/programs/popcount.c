#include <stdio.h>
static int pop(unsigned long x) { int c = 0; while (x) { x &= x - 1; c++; } return c; }
int main(void) { long t = 0; unsigned long x = 0x9E3779B97F4A7C15ul; for (int i = 0; i < 1000; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; t += pop(x); } printf("%ld\n", t); return 0; }
