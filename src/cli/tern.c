/* Placeholder until the command front end lands on this branch. */
#include <stdio.h>

int main(void)
{
    puts("tern: no commands yet");
    return 0;
}
