#include <stdio.h>
static unsigned rev(unsigned x) { unsigned r = 0; for (int i = 0; i < 32; i++) { r = (r << 1) | (x & 1); x >>= 1; } return r; }
int main(void) { unsigned s = 0; for (unsigned i = 0; i < 3000; i++) s ^= rev(i * 2654435761u) + i; printf("%u\n", s); return 0; }
