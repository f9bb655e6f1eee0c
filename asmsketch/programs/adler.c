#include <stdio.h>
int main(void) { unsigned a = 1, b = 0; for (int i = 0; i < 5000; i++) { unsigned char byte = (unsigned char)(i * 7 + (i >> 3)); a = (a + byte) % 65521; b = (b + a) % 65521; } printf("%u\n", (b << 16) | a); return 0; }
